"""Database outage under load: nothing acknowledged is lost, nothing is stored twice (design §6).

The test runs its own SecantusDB server (with `--sync-on-commit`, as durability needs) and
stops it; the session's shared server is never touched.
"""

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from activity_contract.topology import DEAD_LETTER_QUEUE
from activity_testing.events import PostOutcome
from activity_testing.processes import SecantusServer

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

Document = dict[str, Any]


@pytest.fixture
def own_database(secantus_storage: Path) -> Iterator[SecantusServer]:
    """A SecantusDB server of this test's own, which it may stop and restart."""
    server = SecantusServer(secantus_storage).start()
    yield server
    server.stop()


@pytest.fixture
async def own_activities(
    own_database: SecantusServer, mongo_database: str
) -> AsyncIterator[AsyncCollection[Document]]:
    """The `activities` collection on that server."""
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(
        own_database.url, uuidRepresentation="standard", serverSelectionTimeoutMS=5000
    )
    yield mongo[mongo_database]["activities"]
    await mongo.close()


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
async def test_database_stopped_under_load_then_restarted_loses_nothing(
    stop_signal: signal.Signals,
    own_database: SecantusServer,
    own_activities: AsyncCollection[Document],
    start_processor: Any,
    client: httpx.AsyncClient,
    post_events: Any,
    wait_until: Any,
    queue_depth: Any,
) -> None:
    processor = start_processor(MONGODB_URL=own_database.url)
    progress = PostOutcome()
    posting = asyncio.create_task(post_events(1500, concurrency=8, outcome=progress))
    assert await wait_until(lambda: _count_at_least(own_activities, 200), within=60)

    await asyncio.to_thread(own_database.stop, stop_signal)
    async with httpx.AsyncClient(base_url=processor.base_url) as http:
        assert await wait_until(lambda: _mongo_down(http), within=30)
        # Ingest never depends on the database: it accepts throughout the outage, while
        # the processor retries its writes (and acknowledges nothing).
        during = await post_events(500, concurrency=8)
        assert await wait_until(lambda: _failed_writes_at_least(http, 3), within=60)
    await asyncio.to_thread(own_database.start)
    before = await posting
    accepted = before.accepted + during.accepted

    assert before.statuses == {202: 1500}
    assert during.statuses == {202: 500}
    assert await wait_until(lambda: _count_at_least(own_activities, 2000), within=120)
    assert await wait_until(lambda: _equals(queue_depth(), 0), within=60)
    # Counted by the id each event was posted with, which a second copy would repeat.
    posted_as = Counter(
        [doc["metadata"]["posted_as"] async for doc in own_activities.find({}, {"metadata": 1})]
    )
    assert set(posted_as) == set(accepted)
    assert set(posted_as.values()) == {1}
    assert await queue_depth(DEAD_LETTER_QUEUE) == 0


async def _mongo_down(http: httpx.AsyncClient) -> bool:
    response = await http.get("/health/ready")
    return response.status_code == 503 and response.json()["checks"]["mongodb"] == "down"


async def _failed_writes_at_least(http: httpx.AsyncClient, expected: int) -> bool:
    metrics = (await http.get("/metrics")).text
    for line in metrics.splitlines():
        if line.startswith("event_tracker_processor_bulk_write_failures_total "):
            return float(line.split()[-1]) >= expected
    return False


async def _count_at_least(collection: AsyncCollection[Document], expected: int) -> bool:
    return await collection.count_documents({}) >= expected


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)
