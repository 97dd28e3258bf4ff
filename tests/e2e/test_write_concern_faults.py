"""Write-concern errors, then an outage: nothing is acknowledged that no write confirmed durable.

An insert answered with a `writeConcernError` was applied on the primary but not confirmed
by a majority. If the replica set then loses its majority, the primary rolls that write
back: only an insert answered without a write-concern error makes an event durable, and
until one is, its message must stay in the queue (held, or requeued), never acknowledged.

SecantusDB runs here with test commands, so a `failCommand` fail point, limited to the
processor's `appName`, answers every insert with a `writeConcernError` (code 64, the
`wtimeout` of `w: majority`) and then drops the connection of every insert (the primary
unreachable). SecantusDB is a single node and rolls nothing back: the test deletes the
documents those inserts applied, as the rollback would. The test's own clients carry no
`appName` and are never failed.
"""

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from activity_contract.topology import ACTIVITY_QUEUE, DEAD_LETTER_QUEUE
from activity_testing.processes import SecantusServer, ServiceProcess
from activity_testing.rabbitmq import ready_messages

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

Document = dict[str, Any]
FailInserts = Callable[..., Awaitable[None]]

APP_NAME = "event-tracker-write-concern-under-test"
# What mongod answers when `w: majority` is not reached within `wtimeout`.
WRITE_CONCERN_TIMEOUT = {"code": 64, "errmsg": "waiting for replication timed out"}
EVENTS = 40
PREFIX = "event_tracker_processor"
# The processor's write retry budget, when it reads one from its environment; the
# processor's built-in budget is 60 s.
RETRY_SECONDS = 3
# Long enough for a started processor to receive every queued message before it writes.
GATHER_MS = 2000


@pytest.fixture(scope="module")
def mongo_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SecantusDB of this module's own, with test commands (fail points)."""
    storage = tmp_path_factory.mktemp("secantus-write-concern")
    with SecantusServer(storage, test_commands=True) as server:
        yield server.url


@pytest.fixture
def processor_mongodb_url(mongo_server_url: str) -> str:
    """The processor's MONGODB_URL: the same server, under the `appName` fail points match."""
    return f"{mongo_server_url}&appName={APP_NAME}"


@pytest.fixture
async def fail_inserts(mongo_server_url: str) -> AsyncIterator[FailInserts]:
    """Make every insert of the processor fail as `data` says (`fail_inserts()`: heal).

    One `failCommand` fail point is armed at a time: arming one replaces the last.
    """
    admin: AsyncMongoClient[Document] = AsyncMongoClient(mongo_server_url)

    async def arm(**data: Any) -> None:
        command: Document = {"configureFailPoint": "failCommand", "mode": "off"}
        if data:
            command["mode"] = "alwaysOn"
            command["data"] = {"failCommands": ["insert"], "appName": APP_NAME, **data}
        await admin.admin.command(command)

    try:
        yield arm
    finally:
        await arm()
        await admin.close()


async def test_shutdown_in_an_outage_requeues_events_that_only_met_write_concern_errors(
    client: httpx.AsyncClient,
    start_processor: Callable[..., ServiceProcess],
    processor_mongodb_url: str,
    fail_inserts: FailInserts,
    rabbit_url: str,
    post_events: Any,
    activities: AsyncCollection[Document],
    wait_until: Any,
    queue_depth: Any,
    assert_stored_exactly_once: Any,
) -> None:
    """SIGTERM while the writes are still retried: shutdown gives up, the messages go back."""
    await fail_inserts(writeConcernError=WRITE_CONCERN_TIMEOUT)
    # Queued first and given time to gather, so the processor writes them as one group:
    # in more groups than it writes at once, with every write retried for the whole
    # budget, the later groups would wait for a slot rather than be applied.
    outcome = await post_events(EVENTS)
    assert outcome.statuses == {202: EVENTS}
    processor = start_processor(
        MONGODB_URL=processor_mongodb_url, PROCESSOR_BATCH_WAIT_MS=str(GATHER_MS)
    )

    await _writes_applied_then_primary_lost(processor, fail_inserts, activities, wait_until)
    # Held by the processor, unacknowledged (`messages` lags behind in the statistics).
    assert await wait_until(lambda: _above_zero(queue_depth(column="messages_unacknowledged")))

    exit_code = await asyncio.to_thread(processor.stop, signal.SIGTERM, 60.0)
    assert exit_code in (0, -signal.SIGTERM)
    # Each message was either requeued or returned when the connection closed.
    assert await wait_until(lambda: _ready_at_least(rabbit_url, 1), within=15), (
        "the processor acknowledged messages whose writes were never confirmed durable: "
        f"{await ready_messages(rabbit_url, ACTIVITY_QUEUE)} ready in the queue, "
        f"{await ready_messages(rabbit_url, DEAD_LETTER_QUEUE)} dead-lettered, "
        f"{await activities.count_documents({})} of {EVENTS} events stored"
    )

    await fail_inserts()
    start_processor(MONGODB_URL=processor_mongodb_url)
    stored = await assert_stored_exactly_once(outcome.accepted)
    assert len(stored) == EVENTS
    assert await queue_depth(DEAD_LETTER_QUEUE) == 0


async def test_retry_budget_spent_in_an_outage_requeues_events_that_only_met_write_concern_errors(
    client: httpx.AsyncClient,
    start_processor: Callable[..., ServiceProcess],
    processor_mongodb_url: str,
    fail_inserts: FailInserts,
    post_events: Any,
    activities: AsyncCollection[Document],
    wait_until: Any,
    assert_stored_exactly_once: Any,
    queue_depth: Any,
) -> None:
    """The write retry budget runs out during the outage: the messages are requeued."""
    await fail_inserts(writeConcernError=WRITE_CONCERN_TIMEOUT)
    processor = start_processor(
        MONGODB_URL=processor_mongodb_url, PROCESSOR_WRITE_RETRY_SECONDS=str(RETRY_SECONDS)
    )
    outcome = await post_events(EVENTS)
    assert outcome.statuses == {202: EVENTS}

    await _writes_applied_then_primary_lost(processor, fail_inserts, activities, wait_until)
    # The processor settles the messages once its budget is spent: 60 s where it reads
    # none from its environment.
    assert await wait_until(lambda: _settled_any(processor), within=90)
    counters = await _samples(processor)
    acknowledged = counters[f"{PREFIX}_events_persisted_total"]
    acknowledged += counters[f"{PREFIX}_events_duplicate_total"]
    assert acknowledged == 0, (
        f"{acknowledged:.0f} events acknowledged as stored (persisted or duplicate) though no "
        f"write of theirs was confirmed durable; {await activities.count_documents({})} of "
        f"{EVENTS} are stored"
    )
    assert counters[f"{PREFIX}_events_retried_total"] >= 1

    # Healed before the requeues reach the delivery limit: every event stored once.
    await fail_inserts()
    stored = await assert_stored_exactly_once(outcome.accepted)
    assert len(stored) == EVENTS
    assert await queue_depth(DEAD_LETTER_QUEUE) == 0


async def _writes_applied_then_primary_lost(
    processor: ServiceProcess,
    fail_inserts: FailInserts,
    activities: AsyncCollection[Document],
    wait_until: Any,
) -> None:
    """Inserts are applied but answered with write-concern errors, several times over; then
    the primary is unreachable and rolls back what no majority confirmed."""
    assert await wait_until(lambda: _count_is(activities, EVENTS), within=30)
    # Applied, then tried again at least twice (a repeat is a duplicate-key error, with the
    # write-concern error again).
    assert await wait_until(lambda: _insert_attempts_at_least(processor, 3), within=30)

    failures = (await _samples(processor))[f"{PREFIX}_bulk_write_failures_total"]
    await fail_inserts(closeConnection=True)
    assert await wait_until(lambda: _write_failures_at_least(processor, failures + 2), within=30)
    await activities.delete_many({})  # the rollback: no majority ever had these writes


async def _samples(processor: ServiceProcess) -> dict[str, float]:
    """The processor's metric samples by name, label sets added up."""
    async with httpx.AsyncClient(base_url=processor.base_url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
    return samples


async def _insert_attempts_at_least(processor: ServiceProcess, expected: int) -> bool:
    return (await _samples(processor))[f"{PREFIX}_bulk_write_size_count"] >= expected


async def _write_failures_at_least(processor: ServiceProcess, expected: float) -> bool:
    return (await _samples(processor))[f"{PREFIX}_bulk_write_failures_total"] >= expected


async def _settled_any(processor: ServiceProcess) -> bool:
    """Whether a message was acknowledged (its events counted) or requeued."""
    samples = await _samples(processor)
    return any(
        samples[f"{PREFIX}_{name}_total"] > 0
        for name in ("events_persisted", "events_duplicate", "events_retried")
    )


async def _above_zero(depth: Awaitable[int]) -> bool:
    return await depth > 0


async def _count_is(collection: AsyncCollection[Document], expected: int) -> bool:
    return await collection.count_documents({}) == expected


async def _ready_at_least(rabbit_url: str, expected: int) -> bool:
    return await ready_messages(rabbit_url, ACTIVITY_QUEUE) >= expected
