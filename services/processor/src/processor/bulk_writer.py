"""Group documents into unordered bulk inserts by size and time; report each one's fate.

A caller awaits `write_many(documents)` and settles its message only after the outcomes.
A document is STORED only once a write of it was acknowledged by a majority with its
journal (a write-concern error leaves it unconfirmed, written again until confirmed or
given up); before each insert and after the last one, the store says which documents an
erasure covers, and those are deleted instead. Every outcome resolves, whatever is
raised: a write never leaves a caller waiting, and each call to the database is bounded
in time, so a shutdown is too.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar

from opentelemetry.trace import SpanContext, SpanKind, Tracer
from pymongo.errors import BulkWriteError, PyMongoError

from activity_contract.tracing import current_span_context, span_of_many
from processor.metrics import ProcessorMetrics

logger = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
# Per-document server error codes that say "try again later", not "this document is bad":
# PyMongo's retryable and "not primary" codes (a replica set election interrupting an
# unordered insert), 50 (MaxTimeMSExpired), and 133 (FailedToSatisfyReadPreference: mongos
# finds no primary for a shard during its election).
TRANSIENT_CODES = frozenset(
    {6, 7, 50, 89, 91, 133, 189, 262, 9001, 10058, 10107, 11600, 11602, 13435, 13436}
)

DocumentT = TypeVar("DocumentT")
DocumentT_contra = TypeVar("DocumentT_contra", contravariant=True)
StepResult = TypeVar("StepResult")


class GroupStore(Protocol[DocumentT_contra]):
    """Where groups are written: an unordered durable insert, and the erasure checks."""

    async def insert_many(self, documents: Sequence[DocumentT_contra]) -> None:
        """Insert unordered and durably; `BulkWriteError` for per-document results."""

    async def covered(self, documents: Sequence[DocumentT_contra]) -> list[int]:
        """The indexes of the documents an erasure covers."""

    async def delete(self, documents: Sequence[DocumentT_contra]) -> int:
        """Delete these documents durably; how many were stored."""


class WriteOutcome(Enum):
    """What happened to one document."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # already stored: success for an idempotent write
    ERASED = "erased"  # an erasure covers it: not stored (or deleted again)
    REJECTED = "rejected"  # the database refuses this document: dead-letter it alone
    RETRY_LATER = "retry_later"  # the database stayed unavailable: requeue the message


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for database outages, retried in-process before giving up."""

    first_delay: float = 0.1
    max_delay: float = 5.0
    give_up_after: float = 60.0
    # Each call to the database (insert, check, delete) is abandoned after this long.
    attempt_timeout: float = 10.0
    # Groups written at once; the next one is formed when a slot frees, and its clocks start
    # then. Measured
    # (bench/RESULTS.md, 2026-12-03): unbounded, a 20,000-event backlog became 40 inserts in
    # flight, most over the attempt timeout, abandoned and written again.
    concurrent_groups: int = 4


class _UnavailableError(Exception):
    """One call to the database failed in a way a later attempt may not."""


@dataclass
class _Call:
    """One `write_many` call: its documents' outcomes, resolved as their groups finish."""

    outcomes: list[WriteOutcome]
    left: int
    done: asyncio.Future[list[WriteOutcome]]
    span: SpanContext | None = None  # tracing on: the span of the caller (a message)

    def resolve(self, index: int, outcome: WriteOutcome) -> None:
        self.outcomes[index] = outcome
        self.left -= 1
        if self.left == 0 and not self.done.done():
            self.done.set_result(self.outcomes)


@dataclass
class _Pending(Generic[DocumentT]):
    document: DocumentT
    call: _Call
    index: int


class BulkWriter(Generic[DocumentT]):
    """Collects documents and writes them in groups of up to `batch_size` or `max_wait`.

    Failures are told apart: a per-document write error (other than a duplicate or a
    transient code) rejects that document only; any other database error, a write-concern
    error or a call over `attempt_timeout` is an outage, retried with backoff for
    `give_up_after` seconds; an error that is not the database's (a document the driver
    cannot encode, a bug) is narrowed down by writing the group in halves, so only the
    document that causes it is rejected.
    """

    def __init__(
        self,
        store: GroupStore[DocumentT],
        batch_size: int,
        max_wait: float,
        retry: RetryPolicy | None = None,
        metrics: ProcessorMetrics | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        """Write through `store`; with a `tracer`, each group's write is a span."""
        self._tracer = tracer
        self._store = store
        self._metrics = metrics
        self._batch_size = batch_size
        self._max_wait = max_wait
        self._retry = retry or RetryPolicy()
        self._pending: list[_Pending[DocumentT]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._groups: set[asyncio.Task[None]] = set()  # writers, waiting for a slot or writing
        self._writer_waiting = False  # at most one writer waits for a slot at a time
        self._due = 0  # how many of the oldest pending documents are to be written now
        self._slots = asyncio.Semaphore(self._retry.concurrent_groups)
        self._give_up_at: float | None = None  # loop time after which retries stop

    async def write_many(
        self, documents: Sequence[DocumentT], flush: bool = False
    ) -> list[WriteOutcome]:
        """Queue documents and wait until each one's group was written (or gave up).

        `flush`: write the pending group now (the caller knows no more will come soon).
        """
        if not documents:
            return []
        loop = asyncio.get_running_loop()
        # One future per call, not per document: a message of many events waits once.
        call = _Call(
            [WriteOutcome.RETRY_LATER] * len(documents),
            len(documents),
            loop.create_future(),
            current_span_context() if self._tracer is not None else None,
        )
        self._pending.extend(_Pending(document, call, i) for i, document in enumerate(documents))
        if flush or len(self._pending) >= self._batch_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._max_wait, self._flush)
        # Shielded: a cancelled caller (shutdown) must not cancel a group in flight.
        return list(await asyncio.shield(call.done))

    def begin_shutdown(self, retry_for: float) -> None:
        """Write what is pending now and stop retrying `retry_for` seconds from now.

        Groups still failing then report `RETRY_LATER`, so their messages go back to the
        queue and shutdown stays bounded even while the database is down.
        """
        self._give_up_at = asyncio.get_running_loop().time() + retry_for
        self._flush()

    async def drain(self) -> None:
        """Write whatever is pending and wait for every group in flight."""
        self._flush()
        while self._groups:
            await asyncio.gather(*self._groups, return_exceptions=True)

    def _flush(self) -> None:
        """Let everything pending now be written as soon as a slot is free."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due = len(self._pending)
        self._start_writer()

    def _start_writer(self) -> None:
        if self._pending and not self._writer_waiting:
            self._writer_waiting = True
            task = asyncio.create_task(self._write_next())
            self._groups.add(task)
            task.add_done_callback(self._groups.discard)

    async def _write_next(self) -> None:
        """Wait for a slot, then write the oldest pending documents, a group's worth at most.

        The group is formed once its slot is free, not when it was flushed: while every slot
        is busy, what arrives meanwhile joins it, so a backlog of small messages is written
        in full groups rather than one small insert (and two erasure checks) per message.
        """
        try:
            await self._slots.acquire()
        except BaseException:
            # Cancelled while waiting (the loop is going away): nothing of it was written.
            self._writer_waiting = False
            _resolve(self._pending, [WriteOutcome.RETRY_LATER] * len(self._pending))
            self._pending.clear()
            raise
        self._writer_waiting = False
        try:
            group = self._pending[: self._batch_size]
            del self._pending[: len(group)]
            self._due = max(self._due - len(group), 0)
            if self._due or len(self._pending) >= self._batch_size:
                self._start_writer()
            elif self._pending and self._timer is None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self._max_wait, self._flush)
            if group:
                await self._write_group(group)
        finally:
            self._slots.release()

    async def _write_group(self, group: list[_Pending[DocumentT]]) -> None:
        if self._tracer is None:
            await self._write_group_now(group)
            return
        # The span of each message in the group, once (a message's documents share one).
        spans = {id(entry.call): entry.call.span for entry in group if entry.call.span}
        callers = list(spans.values())
        attributes = {"db.system": "mongodb", "db.operation.name": "insert_many"}
        with span_of_many(
            self._tracer, "bulk insert", SpanKind.CLIENT, callers, attributes
        ) as span:
            outcomes = await self._write_group_now(group)
            span.set_attributes(
                {
                    f"event_tracker.{outcome.value}": outcomes.count(outcome)
                    for outcome in WriteOutcome
                }
            )

    async def _write_group_now(self, group: list[_Pending[DocumentT]]) -> list[WriteOutcome]:
        outcomes = [WriteOutcome.RETRY_LATER] * len(group)
        try:
            await self._write([entry.document for entry in group], outcomes)
        except BaseException:
            # Cancelled, or a bug in this module: nothing was checked against erasures
            # after its insert, so every message of the group goes back to the queue.
            _requeue_written(outcomes)
            raise
        finally:
            _resolve(group, outcomes)
        return outcomes

    async def _write(self, documents: list[DocumentT], outcomes: list[WriteOutcome]) -> None:
        """Check erasures, insert until confirmed, check erasures again; set outcomes."""
        give_up_at = asyncio.get_running_loop().time() + self._retry.give_up_after
        todo = list(range(len(documents)))
        unconfirmed: set[int] = set()  # written by an attempt whose durability is unknown

        async def insert_step() -> bool:
            nonlocal todo
            todo = await self._drop_covered(documents, outcomes, todo)
            if todo:
                todo = await self._insert_once(documents, outcomes, todo, unconfirmed)
            return not todo

        if not await self._retrying(insert_step, give_up_at):
            logger.error("database unavailable, requeueing", extra={"documents": len(todo)})
            # What was written is not checked against erasures after its insert: its
            # messages go back to the queue too, and the next delivery checks it.
            _requeue_written(outcomes)
            return
        # An erasure may have come while the insert was under way: check once more. Until
        # that check is done the messages are not acknowledged.
        written = [i for i, o in enumerate(outcomes) if o in _WRITTEN]

        async def recheck_step() -> bool:
            nonlocal written
            written = await self._drop_covered(documents, outcomes, written)
            return True

        if not await self._retrying(recheck_step, give_up_at):
            logger.error("erasure check unavailable, requeueing", extra={"documents": len(written)})
            for index in written:
                outcomes[index] = WriteOutcome.RETRY_LATER

    async def _retrying(self, step: Callable[[], Awaitable[bool]], give_up_at: float) -> bool:
        """Run `step` until it is done, backing off on outages; False once given up."""
        loop = asyncio.get_running_loop()
        delay = self._retry.first_delay
        while True:
            try:
                if await step():
                    return True
            except _UnavailableError as error:
                if self._metrics is not None:
                    self._metrics.bulk_write_failures.inc()
                logger.warning("database call failed, will retry", extra={"error": str(error)})
            if loop.time() >= give_up_at or self._shutting_down_past_deadline():
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry.max_delay)

    async def _call(self, call: Awaitable[StepResult]) -> StepResult:
        """One bounded call to the database; an outage becomes `_UnavailableError`."""
        try:
            async with asyncio.timeout(self._retry.attempt_timeout):
                return await call
        except TimeoutError:
            raise _UnavailableError(f"no answer within {self._retry.attempt_timeout} s") from None
        except BulkWriteError:
            raise
        except PyMongoError as error:  # connection, election, disk, credentials, write concern
            raise _UnavailableError(type(error).__name__) from None

    async def _drop_covered(
        self, documents: list[DocumentT], outcomes: list[WriteOutcome], indexes: list[int]
    ) -> list[int]:
        """Delete (or never write) the documents an erasure covers; return the others."""
        if not indexes:
            return indexes
        covered = await self._call(self._store.covered([documents[i] for i in indexes]))
        if not covered:
            return indexes
        doomed = [indexes[k] for k in covered]
        await self._call(self._store.delete([documents[i] for i in doomed]))
        for index in doomed:
            outcomes[index] = WriteOutcome.ERASED
        logger.info("events covered by an erasure not stored", extra={"events": len(doomed)})
        return [index for index in indexes if outcomes[index] is not WriteOutcome.ERASED]

    def _shutting_down_past_deadline(self) -> bool:
        return (
            self._give_up_at is not None and asyncio.get_running_loop().time() >= self._give_up_at
        )

    async def _insert_once(
        self,
        documents: list[DocumentT],
        outcomes: list[WriteOutcome],
        indexes: list[int],
        unconfirmed: set[int],
    ) -> list[int]:
        """Insert the documents at `indexes`; set their outcomes; return the indexes to retry."""
        started = time.perf_counter()
        try:
            await self._call(self._store.insert_many([documents[i] for i in indexes]))
        except BulkWriteError as error:
            self._observe(len(indexes), started)
            return _sort_write_errors(error, outcomes, indexes, unconfirmed)
        except _UnavailableError:
            self._observe(len(indexes), started)
            raise
        except Exception as error:  # not the database's: find the document that causes it
            self._observe(len(indexes), started)
            if len(indexes) == 1:
                logger.error(
                    "document cannot be written",
                    extra={"error_type": type(error).__name__, "error": str(error)[:200]},
                )
                outcomes[indexes[0]] = WriteOutcome.REJECTED
                return []
            middle = len(indexes) // 2
            retry = await self._insert_once(documents, outcomes, indexes[:middle], unconfirmed)
            return retry + await self._insert_once(
                documents, outcomes, indexes[middle:], unconfirmed
            )
        self._observe(len(indexes), started)
        for index in indexes:
            outcomes[index] = WriteOutcome.STORED
        return []

    def _observe(self, size: int, started: float) -> None:
        duration = time.perf_counter() - started
        logger.debug(
            "bulk insert done",
            extra={"documents": size, "duration_ms": round(duration * 1000, 1)},
        )
        if self._metrics is not None:
            self._metrics.bulk_write_size.observe(size)
            self._metrics.bulk_write_duration.observe(duration)


_WRITTEN = (WriteOutcome.STORED, WriteOutcome.DUPLICATE)


def _sort_write_errors(
    error: BulkWriteError,
    outcomes: list[WriteOutcome],
    indexes: list[int],
    unconfirmed: set[int],
) -> list[int]:
    """Set the outcomes a bulk result decides; return the indexes to write again.

    With a write-concern error nothing in the answer is known to be durable: documents
    written (or found already there) are written again until an answer confirms them; a
    confirmed duplicate of one this writer wrote earlier is that write, confirmed.
    """
    failed: dict[int, int] = {
        indexes[item["index"]]: item["code"] for item in error.details.get("writeErrors", [])
    }
    unconfirmed_now = bool(error.details.get("writeConcernErrors"))
    retry = []
    for index in indexes:
        code = failed.get(index)
        if code is None or code == DUPLICATE_KEY:
            if unconfirmed_now:
                unconfirmed.add(index)
                retry.append(index)
            elif code is None or index in unconfirmed:
                outcomes[index] = WriteOutcome.STORED
            else:
                outcomes[index] = WriteOutcome.DUPLICATE
        elif code in TRANSIENT_CODES:
            retry.append(index)
        else:
            outcomes[index] = WriteOutcome.REJECTED
    return retry


def _requeue_written(outcomes: list[WriteOutcome]) -> None:
    for index, outcome in enumerate(outcomes):
        if outcome in _WRITTEN:
            outcomes[index] = WriteOutcome.RETRY_LATER


def _resolve(group: Sequence[_Pending[Any]], outcomes: Sequence[WriteOutcome]) -> None:
    for entry, outcome in zip(group, outcomes, strict=True):
        entry.call.resolve(entry.index, outcome)
