"""An erasure covers what was received before it, to the microsecond, against the database.

MongoDB keeps whole milliseconds: an event received 300 us before an erasure, in the same
millisecond, used to survive it (`received_at < erased_at` compared truncated values).
"""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from pymongo import AsyncMongoClient

import ingest.erasures
from activity_contract.storage import ACTIVITIES_COLLECTION
from ingest.erasures import ActivityEraser
from processor.documents import mongo_client

pytestmark = pytest.mark.integration

# An erasure at .400 ms past a whole millisecond; the event 300 us before, the same ms.
ERASED_AT = datetime(2026, 5, 1, 12, 0, 0, 400, tzinfo=UTC)


class FixedClock(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> "FixedClock":
        return cls.fromtimestamp(ERASED_AT.timestamp(), tz)


@pytest.fixture
async def client(mongo_server_url: str) -> AsyncIterator[AsyncMongoClient[dict[str, object]]]:
    client = mongo_client(mongo_server_url)
    yield client
    await client.close()


async def test_an_event_received_in_the_erasures_millisecond_is_erased(
    client: AsyncMongoClient[dict[str, object]],
    mongo_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ingest.erasures, "datetime", FixedClock)
    activities = client[mongo_database][ACTIVITIES_COLLECTION]
    received = ERASED_AT - timedelta(microseconds=300)
    await activities.insert_one(
        {"_id": uuid4(), "user_id": "u", "received_at": received, "timestamp": received}
    )
    later = ERASED_AT + timedelta(milliseconds=2)
    await activities.insert_one(
        {"_id": uuid4(), "user_id": "u", "received_at": later, "timestamp": later}
    )

    erasure = await ActivityEraser(client, mongo_database).erase("u")

    assert erasure.deleted == 1
    assert erasure.erased_at > ERASED_AT
    assert await activities.count_documents({"user_id": "u"}) == 1
