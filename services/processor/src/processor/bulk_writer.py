"""Group documents into unordered bulk inserts by size and time; report each one's fate.

A caller awaits `write_many(documents)` and settles its message only after the outcomes,
which are known only once each document's group was written with a durable write
concern. Every outcome resolves, whatever is raised: a write never leaves a caller
waiting.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

from pymongo.errors import BulkWriteError, PyMongoError

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
InsertMany = Callable[[Sequence[DocumentT]], Awaitable[Any]]


class WriteOutcome(Enum):
    """What happened to one document."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # already stored: success for an idempotent write
    REJECTED = "rejected"  # the database refuses this document: dead-letter it alone
    RETRY_LATER = "retry_later"  # the database stayed unavailable: requeue the message


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for database outages, retried in-process before giving up."""

    first_delay: float = 0.1
    max_delay: float = 5.0
    give_up_after: float = 60.0


@dataclass
class _Call:
    """One `write_many` call: its documents' outcomes, resolved as their groups finish."""

    outcomes: list[WriteOutcome]
    left: int
    done: asyncio.Future[list[WriteOutcome]]

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
    """Collects documents and inserts them in groups of up to `batch_size` or `max_wait`.

    Failures are told apart: a per-document write error (other than a duplicate or a
    transient code) rejects that document only; any other database error is an outage,
    retried with backoff for `give_up_after` seconds; an error that is not the database's
    (a document the driver cannot encode, a bug) is narrowed down by writing the group in
    halves, so only the document that causes it is rejected.
    """

    def __init__(
        self,
        insert_many: InsertMany[DocumentT],
        batch_size: int,
        max_wait: float,
        retry: RetryPolicy | None = None,
        metrics: ProcessorMetrics | None = None,
    ) -> None:
        """Write through `insert_many`, which must insert unordered and durably."""
        self._insert_many = insert_many
        self._metrics = metrics
        self._batch_size = batch_size
        self._max_wait = max_wait
        self._retry = retry or RetryPolicy()
        self._pending: list[_Pending[DocumentT]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._groups: set[asyncio.Task[None]] = set()
        self._give_up_at: float | None = None  # loop time after which retries stop

    async def write_many(self, documents: Sequence[DocumentT]) -> list[WriteOutcome]:
        """Queue documents and wait until each one's group was written (or gave up)."""
        if not documents:
            return []
        loop = asyncio.get_running_loop()
        # One future per call, not per document: a message of many events waits once.
        call = _Call(
            [WriteOutcome.RETRY_LATER] * len(documents), len(documents), loop.create_future()
        )
        self._pending.extend(_Pending(document, call, i) for i, document in enumerate(documents))
        if len(self._pending) >= self._batch_size:
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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            group = self._pending[: self._batch_size]
            del self._pending[: self._batch_size]
            task = asyncio.create_task(self._write_group(group))
            self._groups.add(task)
            task.add_done_callback(self._groups.discard)

    async def _write_group(self, group: list[_Pending[DocumentT]]) -> None:
        try:
            outcomes = await self._insert_with_retries([entry.document for entry in group])
        except BaseException:
            # Cancelled, or a bug in this module: the messages go back to the queue.
            _resolve(group, [WriteOutcome.RETRY_LATER] * len(group))
            raise
        _resolve(group, outcomes)

    async def _insert_with_retries(self, documents: list[DocumentT]) -> list[WriteOutcome]:
        outcomes = [WriteOutcome.RETRY_LATER] * len(documents)
        todo = list(range(len(documents)))  # indexes still to write
        loop = asyncio.get_running_loop()
        # Wall time, not the sum of sleeps: each failed attempt itself can take seconds.
        give_up_at = loop.time() + self._retry.give_up_after
        delay = self._retry.first_delay
        while todo:
            todo = await self._insert_once(documents, outcomes, todo)
            if not todo:
                break
            if loop.time() >= give_up_at or self._shutting_down_past_deadline():
                logger.error("database unavailable, requeueing", extra={"documents": len(todo)})
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry.max_delay)
        return outcomes

    def _shutting_down_past_deadline(self) -> bool:
        return (
            self._give_up_at is not None and asyncio.get_running_loop().time() >= self._give_up_at
        )

    async def _insert_once(
        self, documents: list[DocumentT], outcomes: list[WriteOutcome], indexes: list[int]
    ) -> list[int]:
        """Insert the documents at `indexes`; set their outcomes; return the indexes to retry."""
        started = time.perf_counter()
        try:
            await self._insert_many([documents[i] for i in indexes])
        except BulkWriteError as error:
            self._observe(len(indexes), started)
            return _sort_write_errors(error, outcomes, indexes)
        except PyMongoError as error:  # an outage: connection, election, disk, credentials
            self._observe(len(indexes), started)
            if self._metrics is not None:
                self._metrics.bulk_write_failures.inc()
            logger.warning(
                "bulk insert failed, will retry",
                extra={"documents": len(indexes), "error_type": type(error).__name__},
            )
            return indexes
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
            retry = await self._insert_once(documents, outcomes, indexes[:middle])
            return retry + await self._insert_once(documents, outcomes, indexes[middle:])
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


def _sort_write_errors(
    error: BulkWriteError, outcomes: list[WriteOutcome], indexes: list[int]
) -> list[int]:
    failed: dict[int, int] = {
        indexes[item["index"]]: item["code"] for item in error.details.get("writeErrors", [])
    }
    retry = []
    for index in indexes:
        code = failed.get(index)
        if code is None:
            outcomes[index] = WriteOutcome.STORED
        elif code == DUPLICATE_KEY:
            outcomes[index] = WriteOutcome.DUPLICATE
        elif code in TRANSIENT_CODES:
            retry.append(index)
        else:
            outcomes[index] = WriteOutcome.REJECTED
    if error.details.get("writeConcernErrors"):
        # Written but not confirmed durable: write again; a repeat is a duplicate.
        return indexes
    return retry


def _resolve(group: Sequence[_Pending[Any]], outcomes: Sequence[WriteOutcome]) -> None:
    for entry, outcome in zip(group, outcomes, strict=True):
        entry.call.resolve(entry.index, outcome)
