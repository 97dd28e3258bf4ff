"""Fixtures the processor's tests share."""

from collections.abc import AsyncIterator

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from processor.documents import init_documents, mongo_client


@pytest.fixture
async def database(
    mongo_server_url: str, mongo_database: str
) -> AsyncIterator[AsyncDatabase[dict[str, object]]]:
    """The test's own database on the MongoDB-compatible server, with the indexes made."""
    client = mongo_client(mongo_server_url)
    yield await init_documents(client, mongo_database)
    await client.close()
