"""Grouping by size and time, and the fate of each document under each kind of failure."""

import asyncio
import time
from collections.abc import Sequence

import pytest
from bson.errors import InvalidDocument
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    InvalidOperation,
    OperationFailure,
    PyMongoError,
)

from activity_testing.waiting import wait_until
from processor.bulk_writer import BulkWriter, RetryPolicy, WriteOutcome

FAST_RETRY = RetryPolicy(first_delay=0.01, max_delay=0.02, give_up_after=0.1)


async def write(writer: BulkWriter[str], key: str) -> WriteOutcome:
    """One document's outcome."""
    [outcome] = await writer.write_many([key])
    return outcome


class Store:
    """An in-memory unique-key store behaving like an unordered insert_many."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.calls: list[list[str]] = []
        self.refuse: set[str] = set()
        self.outages = 0  # this many calls fail with a connection error first

    async def insert_many(self, documents: Sequence[str]) -> None:
        self.calls.append(list(documents))
        if self.outages:
            self.outages -= 1
            raise AutoReconnect("connection refused")
        errors = []
        for index, key in enumerate(documents):
            if key in self.refuse:
                errors.append({"index": index, "code": 121, "errmsg": "validation"})
            elif key in self.keys:
                errors.append({"index": index, "code": 11000, "errmsg": "duplicate"})
            else:
                self.keys.add(key)
        if errors:
            raise BulkWriteError({"writeErrors": errors, "writeConcernErrors": []})


async def test_full_group_is_written_at_once() -> None:
    store = Store()
    writer = BulkWriter(store.insert_many, batch_size=3, max_wait=60)
    outcomes = await asyncio.gather(*(write(writer, key) for key in "abc"))
    assert outcomes == [WriteOutcome.STORED] * 3
    assert store.calls == [["a", "b", "c"]]


async def test_partial_group_is_written_after_max_wait() -> None:
    store = Store()
    writer = BulkWriter(store.insert_many, batch_size=100, max_wait=0.05)
    outcomes = list(
        await asyncio.wait_for(asyncio.gather(write(writer, "a"), write(writer, "b")), 5)
    )
    assert outcomes == [WriteOutcome.STORED] * 2
    assert store.calls == [["a", "b"]]


async def test_duplicates_are_reported_and_others_still_stored() -> None:
    store = Store()
    store.keys.add("b")
    writer = BulkWriter(store.insert_many, batch_size=3, max_wait=60)
    outcomes = await asyncio.gather(*(write(writer, key) for key in "abc"))
    assert outcomes == [WriteOutcome.STORED, WriteOutcome.DUPLICATE, WriteOutcome.STORED]
    assert store.keys == {"a", "b", "c"}


async def test_refused_document_is_rejected_without_blocking_the_group() -> None:
    store = Store()
    store.refuse.add("b")
    writer = BulkWriter(store.insert_many, batch_size=3, max_wait=60)
    outcomes = await asyncio.gather(*(write(writer, key) for key in "abc"))
    assert outcomes == [WriteOutcome.STORED, WriteOutcome.REJECTED, WriteOutcome.STORED]


async def test_transient_failure_is_retried_until_it_succeeds() -> None:
    store = Store()
    store.outages = 2
    writer = BulkWriter(store.insert_many, batch_size=2, max_wait=60, retry=FAST_RETRY)
    outcomes = list(await asyncio.gather(write(writer, "a"), write(writer, "b")))
    assert outcomes == [WriteOutcome.STORED] * 2
    assert len(store.calls) == 3


async def test_lasting_outage_gives_up_with_retry_later() -> None:
    store = Store()
    store.outages = 1_000
    writer = BulkWriter(store.insert_many, batch_size=1, max_wait=60, retry=FAST_RETRY)
    assert await write(writer, "a") is WriteOutcome.RETRY_LATER
    assert store.keys == set()


@pytest.mark.parametrize(
    "outage",
    [
        OperationFailure("no space left on device", code=14031),
        OperationFailure("authentication failed", code=18),
        InvalidOperation("cannot use MongoClient after close"),
    ],
    ids=["disk-full", "auth-after-rotation", "invalid-operation"],
)
async def test_server_errors_outside_documents_are_outages_not_bad_documents(
    outage: PyMongoError,
) -> None:
    """Only per-document write errors are permanent; the rest is retried, then requeued."""
    calls = 0

    async def failing(_: Sequence[str]) -> None:
        nonlocal calls
        calls += 1
        raise outage

    writer = BulkWriter(failing, batch_size=2, max_wait=60, retry=FAST_RETRY)
    outcomes = await writer.write_many(["a", "b"])
    assert outcomes == [WriteOutcome.RETRY_LATER] * 2
    assert calls > 1


@pytest.mark.parametrize(
    "error",
    [InvalidDocument("key must not contain NUL"), OverflowError("8-byte ints"), ValueError("x")],
)
async def test_an_error_that_is_not_the_databases_rejects_only_its_document(
    error: Exception,
) -> None:
    """Encoding errors and bugs are narrowed down by halves to the document causing them."""
    store = Store()

    async def one_poison(documents: Sequence[str]) -> None:
        if "poison" in documents:
            raise error
        await store.insert_many(documents)

    writer = BulkWriter(one_poison, batch_size=8, max_wait=60, retry=FAST_RETRY)
    keys = ["a", "b", "c", "poison", "d", "e", "f", "g"]
    outcomes = await writer.write_many(keys)
    assert outcomes[3] is WriteOutcome.REJECTED
    assert outcomes[:3] + outcomes[4:] == [WriteOutcome.STORED] * 7
    assert store.keys == set(keys) - {"poison"}


async def test_every_outcome_resolves_when_the_group_is_cancelled() -> None:
    started = asyncio.Event()

    async def hangs(_: Sequence[str]) -> None:
        started.set()
        await asyncio.sleep(3600)

    writer = BulkWriter(hangs, batch_size=2, max_wait=60)
    waiting = asyncio.ensure_future(writer.write_many(["a", "b"]))
    await asyncio.wait_for(started.wait(), 5)
    for group in list(writer._groups):
        group.cancel()
    assert await asyncio.wait_for(waiting, 5) == [WriteOutcome.RETRY_LATER] * 2


async def test_write_concern_error_rewrites_the_group_and_counts_repeats_as_duplicates() -> None:
    store = Store()
    calls = 0

    async def flaky_durability(documents: Sequence[str]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            store.keys.update(documents)  # written, but durability not confirmed
            raise BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 64}]})
        await store.insert_many(documents)

    writer = BulkWriter(flaky_durability, batch_size=2, max_wait=60, retry=FAST_RETRY)
    outcomes = list(await asyncio.gather(write(writer, "a"), write(writer, "b")))
    assert outcomes == [WriteOutcome.DUPLICATE] * 2
    assert calls == 2


async def test_drain_writes_what_is_pending() -> None:
    store = Store()
    writer = BulkWriter(store.insert_many, batch_size=100, max_wait=60)
    pending = asyncio.ensure_future(write(writer, "a"))
    assert await wait_until(lambda: writer._pending, 5, interval=0.001)  # queued, not written
    await asyncio.wait_for(writer.drain(), 5)
    assert await pending is WriteOutcome.STORED


@pytest.mark.parametrize("size", [1, 7, 500])
async def test_groups_never_exceed_batch_size(size: int) -> None:
    store = Store()
    writer = BulkWriter(store.insert_many, batch_size=size, max_wait=0.01)
    keys = [str(i) for i in range(1_000)]
    outcomes = await asyncio.gather(*(write(writer, key) for key in keys))
    assert set(outcomes) == {WriteOutcome.STORED}
    assert max(len(call) for call in store.calls) <= size
    assert sorted(key for call in store.calls for key in call) == sorted(keys)


async def test_give_up_after_is_wall_time_not_the_sum_of_sleeps() -> None:
    async def slow_outage(_: Sequence[str]) -> None:
        await asyncio.sleep(0.2)  # a failing attempt takes time too (server selection)
        raise AutoReconnect("connection refused")

    policy = RetryPolicy(first_delay=0.01, max_delay=0.01, give_up_after=0.3)
    writer = BulkWriter(slow_outage, batch_size=1, max_wait=60, retry=policy)
    started = time.monotonic()
    assert await write(writer, "a") is WriteOutcome.RETRY_LATER
    assert time.monotonic() - started < 1.0


async def test_shutdown_flushes_at_once_and_stops_retrying_soon() -> None:
    store = Store()
    store.outages = 1_000
    patient = RetryPolicy(first_delay=0.01, max_delay=0.02, give_up_after=60)
    writer = BulkWriter(store.insert_many, batch_size=100, max_wait=60, retry=patient)
    pending = asyncio.ensure_future(write(writer, "a"))
    assert await wait_until(lambda: writer._pending, 5, interval=0.001)
    assert store.calls == []  # waiting for its group to fill or time out

    started = time.monotonic()
    writer.begin_shutdown(retry_for=0.2)
    await asyncio.wait_for(writer.drain(), 5)
    assert await pending is WriteOutcome.RETRY_LATER
    assert time.monotonic() - started < 2.0
