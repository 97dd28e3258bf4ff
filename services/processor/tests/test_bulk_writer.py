"""The bulk writer's fate for each document: stored, duplicate, rejected or retry later."""

import asyncio
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from pymongo.errors import BulkWriteError, ServerSelectionTimeoutError

from processor.bulk_writer import BulkWriter, RetryPolicy, WriteOutcome
from processor.documents import Activity


def _document() -> Activity:
    now = datetime.now(UTC)
    document: Activity = Activity.model_construct(
        id=uuid.uuid4(),
        user_id="u",
        event_type="t",
        timestamp=now,
        metadata={},
        received_at=now,
        processed_at=now,
        redelivered=False,
        schema_version=1,
    )
    return document


class FlakyDatabase:
    """Refuses to answer for the first `outages` calls, then writes."""

    def __init__(self, outages: int = 0) -> None:
        self.outages = outages
        self.calls = 0
        self.written: list[Activity] = []

    async def insert_many(self, documents: Sequence[Activity]) -> None:
        self.calls += 1
        if self.calls <= self.outages:
            raise ServerSelectionTimeoutError("down")
        self.written.extend(documents)


FAST = RetryPolicy(first_delay=0.01, max_delay=0.02, give_up_after=5.0)


async def test_transient_failures_are_retried_until_written() -> None:
    database = FlakyDatabase(outages=3)
    writer = BulkWriter(database.insert_many, batch_size=10, max_wait=0.01, retry=FAST)
    outcomes = await asyncio.gather(*(writer.write(_document()) for _ in range(5)))
    assert outcomes == [WriteOutcome.STORED] * 5
    assert database.calls == 4
    assert len(database.written) == 5


async def test_duplicates_count_as_success_and_refused_documents_stand_alone() -> None:
    async def insert_many(documents: Sequence[Activity]) -> None:
        raise BulkWriteError(
            {"writeErrors": [{"index": 0, "code": 11000}, {"index": 2, "code": 121}]}
        )

    writer = BulkWriter(insert_many, batch_size=3, max_wait=1.0, retry=FAST)
    outcomes = await asyncio.gather(*(writer.write(_document()) for _ in range(3)))
    assert outcomes == [WriteOutcome.DUPLICATE, WriteOutcome.STORED, WriteOutcome.REJECTED]


async def test_giving_up_requeues_after_the_wall_time_limit() -> None:
    database = FlakyDatabase(outages=10**6)
    policy = RetryPolicy(first_delay=0.01, max_delay=0.05, give_up_after=0.3)
    writer = BulkWriter(database.insert_many, batch_size=1, max_wait=0.01, retry=policy)
    started = time.monotonic()
    assert await writer.write(_document()) is WriteOutcome.RETRY_LATER
    assert 0.3 <= time.monotonic() - started < 2.0


async def test_shutdown_stops_retrying_and_flushes_at_once() -> None:
    database = FlakyDatabase(outages=10**6)
    writer = BulkWriter(database.insert_many, batch_size=100, max_wait=60.0, retry=FAST)
    pending = asyncio.ensure_future(writer.write(_document()))
    await asyncio.sleep(0.05)
    assert database.calls == 0  # waiting for its group to fill or time out

    started = time.monotonic()
    writer.begin_shutdown(retry_for=0.2)
    await writer.drain()
    assert await pending is WriteOutcome.RETRY_LATER
    assert time.monotonic() - started < 2.0
