"""Grouping by size and time, and the fate of each document under each kind of failure."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

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
# What the database answers when a write is applied but not confirmed durable (majority, j).
WRITE_CONCERN_ERROR = {"writeErrors": [], "writeConcernErrors": [{"code": 64}]}

Hook = Callable[[Sequence[str]], Awaitable[None]]


async def write(writer: BulkWriter[str], key: str) -> WriteOutcome:
    """One document's outcome."""
    [outcome] = await writer.write_many([key])
    return outcome


class Store:
    """An in-memory unique-key store: an unordered insert_many, erasures and deletes.

    Each hook, when set, runs first in its call and may raise, hang, or change the store
    (an erasure arriving, say) to stand for what the database does at that moment.
    """

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.calls: list[list[str]] = []  # each insert_many, as asked
        self.refuse: set[str] = set()
        self.outages = 0  # this many inserts fail with a connection error first
        self.erased: set[str] = set()  # the keys an erasure covers
        self.checks: list[list[str]] = []  # each covered(), as asked
        self.deletes: list[list[str]] = []  # each delete(), as asked
        self.on_insert: Hook | None = None
        self.on_check: Hook | None = None
        self.on_delete: Hook | None = None

    async def insert_many(self, documents: Sequence[str]) -> None:
        self.calls.append(list(documents))
        if self.on_insert is not None:
            await self.on_insert(documents)
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

    async def covered(self, documents: Sequence[str]) -> list[int]:
        self.checks.append(list(documents))
        if self.on_check is not None:
            await self.on_check(documents)
        return [index for index, key in enumerate(documents) if key in self.erased]

    async def delete(self, documents: Sequence[str]) -> int:
        self.deletes.append(list(documents))
        if self.on_delete is not None:
            await self.on_delete(documents)
        stored = self.keys & set(documents)
        self.keys -= stored
        return len(stored)


async def test_full_group_is_written_at_once() -> None:
    store = Store()
    writer = BulkWriter(store, batch_size=3, max_wait=60)
    outcomes = await asyncio.gather(*(write(writer, key) for key in "abc"))
    assert outcomes == [WriteOutcome.STORED] * 3
    assert store.calls == [["a", "b", "c"]]


async def test_partial_group_is_written_after_max_wait() -> None:
    store = Store()
    writer = BulkWriter(store, batch_size=100, max_wait=0.05)
    outcomes = list(
        await asyncio.wait_for(asyncio.gather(write(writer, "a"), write(writer, "b")), 5)
    )
    assert outcomes == [WriteOutcome.STORED] * 2
    assert store.calls == [["a", "b"]]


async def test_duplicates_are_reported_and_others_still_stored() -> None:
    store = Store()
    store.keys.add("b")
    writer = BulkWriter(store, batch_size=3, max_wait=60)
    outcomes = await asyncio.gather(*(write(writer, key) for key in "abc"))
    assert outcomes == [WriteOutcome.STORED, WriteOutcome.DUPLICATE, WriteOutcome.STORED]
    assert store.keys == {"a", "b", "c"}


async def test_refused_document_is_rejected_without_blocking_the_group() -> None:
    store = Store()
    store.refuse.add("b")
    writer = BulkWriter(store, batch_size=3, max_wait=60)
    outcomes = await asyncio.gather(*(write(writer, key) for key in "abc"))
    assert outcomes == [WriteOutcome.STORED, WriteOutcome.REJECTED, WriteOutcome.STORED]


async def test_transient_failure_is_retried_until_it_succeeds() -> None:
    store = Store()
    store.outages = 2
    writer = BulkWriter(store, batch_size=2, max_wait=60, retry=FAST_RETRY)
    outcomes = list(await asyncio.gather(write(writer, "a"), write(writer, "b")))
    assert outcomes == [WriteOutcome.STORED] * 2
    assert len(store.calls) == 3


async def test_lasting_outage_gives_up_with_retry_later() -> None:
    store = Store()
    store.outages = 1_000
    writer = BulkWriter(store, batch_size=1, max_wait=60, retry=FAST_RETRY)
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
    store = Store()

    async def failing(_: Sequence[str]) -> None:
        raise outage

    store.on_insert = failing
    writer = BulkWriter(store, batch_size=2, max_wait=60, retry=FAST_RETRY)
    outcomes = await writer.write_many(["a", "b"])
    assert outcomes == [WriteOutcome.RETRY_LATER] * 2
    assert len(store.calls) > 1


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

    store.on_insert = one_poison
    writer = BulkWriter(store, batch_size=8, max_wait=60, retry=FAST_RETRY)
    keys = ["a", "b", "c", "poison", "d", "e", "f", "g"]
    outcomes = await writer.write_many(keys)
    assert outcomes[3] is WriteOutcome.REJECTED
    assert outcomes[:3] + outcomes[4:] == [WriteOutcome.STORED] * 7
    assert store.keys == set(keys) - {"poison"}


async def test_every_outcome_resolves_when_the_group_is_cancelled() -> None:
    started = asyncio.Event()
    store = Store()

    async def hangs(_: Sequence[str]) -> None:
        started.set()
        await asyncio.Event().wait()  # never answers

    store.on_insert = hangs
    writer = BulkWriter(store, batch_size=2, max_wait=60)
    waiting = asyncio.ensure_future(writer.write_many(["a", "b"]))
    await asyncio.wait_for(started.wait(), 5)
    for group in list(writer._groups):
        group.cancel()
    assert await asyncio.wait_for(waiting, 5) == [WriteOutcome.RETRY_LATER] * 2


async def test_write_concern_error_rewrites_the_group_until_a_confirmed_answer() -> None:
    """Written but not confirmed durable: written again; the duplicates a confirmed answer
    then reports are this writer's own earlier write, now known durable: STORED."""
    store = Store()

    async def durability_unconfirmed_once(documents: Sequence[str]) -> None:
        if len(store.calls) == 1:
            store.keys.update(documents)  # applied on the primary, not confirmed durable
            raise BulkWriteError(WRITE_CONCERN_ERROR)

    store.on_insert = durability_unconfirmed_once
    writer = BulkWriter(store, batch_size=2, max_wait=60, retry=FAST_RETRY)
    outcomes = list(await asyncio.gather(write(writer, "a"), write(writer, "b")))
    assert outcomes == [WriteOutcome.STORED] * 2
    assert store.calls == [["a", "b"], ["a", "b"]]


async def test_write_concern_error_then_an_outage_is_never_stored() -> None:
    """The message of a write never confirmed durable is requeued, not acknowledged."""
    store = Store()

    async def unconfirmed_then_down(documents: Sequence[str]) -> None:
        if len(store.calls) == 1:
            store.keys.update(documents)  # applied, then the primary stepped down
            raise BulkWriteError(WRITE_CONCERN_ERROR)
        raise AutoReconnect("connection refused")

    store.on_insert = unconfirmed_then_down
    writer = BulkWriter(store, batch_size=2, max_wait=60, retry=FAST_RETRY)
    outcomes = list(await asyncio.gather(write(writer, "a"), write(writer, "b")))
    assert outcomes == [WriteOutcome.RETRY_LATER] * 2
    assert len(store.calls) > 1  # written again until given up


async def test_an_event_an_erasure_covers_is_never_inserted() -> None:
    store = Store()
    store.erased.add("b")
    writer = BulkWriter(store, batch_size=3, max_wait=60)
    outcomes = await asyncio.gather(*(write(writer, key) for key in "abc"))
    assert outcomes == [WriteOutcome.STORED, WriteOutcome.ERASED, WriteOutcome.STORED]
    assert store.calls == [["a", "c"]]
    assert store.keys == {"a", "c"}


async def test_an_erasure_arriving_during_the_insert_deletes_what_it_covers() -> None:
    store = Store()

    async def erasure_arrives(_: Sequence[str]) -> None:
        store.erased.add("b")  # recorded while the insert is under way

    store.on_insert = erasure_arrives
    writer = BulkWriter(store, batch_size=3, max_wait=60)
    outcomes = await asyncio.gather(*(write(writer, key) for key in "abc"))
    assert outcomes == [WriteOutcome.STORED, WriteOutcome.ERASED, WriteOutcome.STORED]
    assert store.calls == [["a", "b", "c"]]  # written...
    assert store.deletes == [["b"]]  # ...then deleted
    assert store.keys == {"a", "c"}


async def test_an_erasure_check_failing_after_the_insert_until_give_up_retries_later() -> None:
    """Not acknowledged before the check after the insert has answered."""
    store = Store()

    async def down_after_the_insert(_: Sequence[str]) -> None:
        if store.calls:
            raise AutoReconnect("connection refused")

    store.on_check = down_after_the_insert
    writer = BulkWriter(store, batch_size=2, max_wait=60, retry=FAST_RETRY)
    outcomes = list(await asyncio.gather(write(writer, "a"), write(writer, "b")))
    assert outcomes == [WriteOutcome.RETRY_LATER] * 2
    assert store.calls == [["a", "b"]]
    assert len(store.checks) > 2  # the one before the insert, then retries of the one after


async def test_a_document_stored_before_the_group_gave_up_is_still_checked_for_erasures() -> None:
    """Its message may be another one than the failing document's: it is acknowledged."""
    store = Store()

    async def partly_written_then_down(_: Sequence[str]) -> None:
        if len(store.calls) == 1:
            store.keys.add("a")  # written; "b" interrupted by a step-down
            store.erased.add("a")  # an erasure covering "a" arrives meanwhile
            step_down = {"index": 1, "code": 11602, "errmsg": "InterruptedDueToReplStateChange"}
            raise BulkWriteError({"writeErrors": [step_down], "writeConcernErrors": []})
        raise AutoReconnect("connection refused")

    store.on_insert = partly_written_then_down
    writer = BulkWriter(store, batch_size=2, max_wait=60, retry=FAST_RETRY)
    outcomes = list(await asyncio.gather(write(writer, "a"), write(writer, "b")))
    assert outcomes[1] is WriteOutcome.RETRY_LATER
    assert outcomes[0] is not WriteOutcome.STORED or "a" not in store.keys


@pytest.mark.parametrize("hook", ["on_check", "on_insert", "on_delete"])
async def test_each_call_to_the_store_is_abandoned_after_attempt_timeout(hook: str) -> None:
    """A call that never answers is given up on and retried: the writer never hangs."""
    store = Store()
    store.erased.add("erased")  # so that delete() is called too
    hung = asyncio.Event()

    async def hangs_once(_: Sequence[str]) -> None:
        if not hung.is_set():
            hung.set()
            await asyncio.Event().wait()  # never answers

    setattr(store, hook, hangs_once)
    policy = RetryPolicy(first_delay=0.01, max_delay=0.01, give_up_after=30, attempt_timeout=0.2)
    writer = BulkWriter(store, batch_size=2, max_wait=60, retry=policy)
    started = time.monotonic()
    outcomes = await asyncio.wait_for(writer.write_many(["a", "erased"]), 10)
    assert hung.is_set()
    assert outcomes == [WriteOutcome.STORED, WriteOutcome.ERASED]
    assert time.monotonic() - started < 2
    assert store.keys == {"a"}


async def test_drain_writes_what_is_pending() -> None:
    store = Store()
    writer = BulkWriter(store, batch_size=100, max_wait=60)
    pending = asyncio.ensure_future(write(writer, "a"))
    assert await wait_until(lambda: writer._pending, 5, interval=0.001)  # queued, not written
    await asyncio.wait_for(writer.drain(), 5)
    assert await pending is WriteOutcome.STORED


async def test_while_every_slot_is_busy_flushed_messages_join_one_group() -> None:
    """A backlog of small messages, each flushed, is written in full groups."""
    store = Store()
    release = asyncio.Event()

    async def slow(_: Sequence[str]) -> None:
        await release.wait()

    store.on_insert = slow
    writer = BulkWriter(store, 100, 60, RetryPolicy(concurrent_groups=1))
    first = asyncio.ensure_future(writer.write_many(["m0-a", "m0-b"], flush=True))
    assert await wait_until(lambda: store.calls, 5, interval=0.001)  # holds the only slot
    rest = [
        asyncio.ensure_future(writer.write_many([f"m{i}-a", f"m{i}-b"], flush=True))
        for i in range(1, 10)
    ]
    assert await wait_until(lambda: len(writer._pending) == 18, 5, interval=0.001)
    release.set()
    await asyncio.wait_for(asyncio.gather(first, *rest), 5)
    assert [len(call) for call in store.calls] == [2, 18]


@pytest.mark.parametrize("size", [1, 7, 500])
async def test_groups_never_exceed_batch_size(size: int) -> None:
    store = Store()
    writer = BulkWriter(store, batch_size=size, max_wait=0.01)
    keys = [str(i) for i in range(1_000)]
    outcomes = await asyncio.gather(*(write(writer, key) for key in keys))
    assert set(outcomes) == {WriteOutcome.STORED}
    assert max(len(call) for call in store.calls) <= size
    assert sorted(key for call in store.calls for key in call) == sorted(keys)


async def test_give_up_after_is_wall_time_not_the_sum_of_sleeps() -> None:
    store = Store()

    async def slow_outage(_: Sequence[str]) -> None:
        await asyncio.sleep(0.2)  # a failing attempt takes time too (server selection)
        raise AutoReconnect("connection refused")

    store.on_insert = slow_outage
    policy = RetryPolicy(first_delay=0.01, max_delay=0.01, give_up_after=0.3)
    writer = BulkWriter(store, batch_size=1, max_wait=60, retry=policy)
    started = time.monotonic()
    assert await write(writer, "a") is WriteOutcome.RETRY_LATER
    assert time.monotonic() - started < 1.0


async def test_shutdown_flushes_at_once_and_stops_retrying_soon() -> None:
    store = Store()
    store.outages = 1_000
    patient = RetryPolicy(first_delay=0.01, max_delay=0.02, give_up_after=60)
    writer = BulkWriter(store, batch_size=100, max_wait=60, retry=patient)
    pending = asyncio.ensure_future(write(writer, "a"))
    assert await wait_until(lambda: writer._pending, 5, interval=0.001)
    assert store.calls == []  # waiting for its group to fill or time out

    started = time.monotonic()
    writer.begin_shutdown(retry_for=0.2)
    await asyncio.wait_for(writer.drain(), 5)
    assert await pending is WriteOutcome.RETRY_LATER
    assert time.monotonic() - started < 2.0
