"""Indexes the processor creates, and the TTL index following RETENTION_DAYS (SecantusDB)."""

from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from activity_contract.storage import (
    ACTIVITIES_COLLECTION,
    EVENT_TYPE_INDEX,
    RETENTION_INDEX,
    USER_TIMELINE_INDEX,
)
from processor.documents import init_documents, mongo_client

pytestmark = pytest.mark.integration

Client = AsyncMongoClient[dict[str, object]]


@pytest.fixture
async def client(mongo_server_url: str) -> AsyncIterator[Client]:
    mongo = mongo_client(mongo_server_url)
    yield mongo
    await mongo.close()


async def indexes(client: Client, database: str) -> MutableMapping[str, Any]:
    return await client[database][ACTIVITIES_COLLECTION].index_information()


async def test_query_indexes_are_created(client: Client, mongo_database: str) -> None:
    await init_documents(client, mongo_database)
    found = await indexes(client, mongo_database)
    assert found[USER_TIMELINE_INDEX]["key"] == [("user_id", 1), ("timestamp", -1), ("_id", -1)]
    assert found[EVENT_TYPE_INDEX]["key"] == [("event_type", 1), ("timestamp", -1)]
    assert RETENTION_INDEX not in found


async def test_retention_index_is_created_changed_and_removed(
    client: Client, mongo_database: str
) -> None:
    await init_documents(client, mongo_database, retention_days=30)
    ttl = (await indexes(client, mongo_database))[RETENTION_INDEX]
    assert ttl["key"] == [("timestamp", 1)]
    assert ttl["expireAfterSeconds"] == 30 * 86_400

    # A restart with the same value changes nothing; with another value updates in place.
    await init_documents(client, mongo_database, retention_days=30)
    await init_documents(client, mongo_database, retention_days=7)
    ttl = (await indexes(client, mongo_database))[RETENTION_INDEX]
    assert ttl["expireAfterSeconds"] == 7 * 86_400

    await init_documents(client, mongo_database, retention_days=0)
    found = await indexes(client, mongo_database)
    assert RETENTION_INDEX not in found
    assert USER_TIMELINE_INDEX in found

    # Removing twice is fine, and retention can come back.
    await init_documents(client, mongo_database, retention_days=0)
    await init_documents(client, mongo_database, retention_days=1)
    assert (await indexes(client, mongo_database))[RETENTION_INDEX]["expireAfterSeconds"] == 86_400
