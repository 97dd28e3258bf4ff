"""Group documents into unordered bulk inserts by size and time; report each one's fate.

A caller awaits `write(document)` and acknowledges its message only after the outcome,
which is known only once the whole group was written with a durable write concern.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)

from processor.metrics import ProcessorMetrics

logger = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
# Server error codes that say "try again later", not "this document is bad": PyMongo's
# retryable and "not primary" codes (replica set elections), 50 (MaxTimeMSExpired), and 133
# (FailedToSatisfyReadPreference: mongos finds no primary for a shard during its election).
TRANSIENT_CODES = frozenset(
    {6, 7, 50, 89, 91, 133, 189, 262, 9001, 10058, 10107, 11600, 11602, 13435, 13436}
)

DocumentT = TypeVar("DocumentT")
InsertMany = Callable[[Sequence[DocumentT]], Awaitable[Any]]


class WriteOutcome(Enum):
    """What happened to one document."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # already stored: success for an idempotent write
    REJECTED = "rejected"  # the database refuses this document: dead-letter it
    RETRY_LATER = "retry_later"  # the database stayed unavailable: requeue the message


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for transient database failures, retried in-process before giving up."""

    first_delay: float = 0.1
    max_delay: float = 5.0
    give_up_after: float = 60.0


def _is_transient(error: PyMongoError) -> bool:
    if isinstance(error, ConnectionFailure | WriteConcernError | ExecutionTimeout):
        return True
    if isinstance(error, OperationFailure) and not isinstance(error, BulkWriteError):
        return error.code in TRANSIENT_CODES or error.has_error_label("RetryableWriteError")
    return False


class BulkWriter(Generic[DocumentT]):
    """Collects documents and inserts them in groups of up to `batch_size` or `max_wait`."""

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
        self._pending: list[tuple[DocumentT, asyncio.Future[WriteOutcome]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._groups: set[asyncio.Task[None]] = set()
        self._give_up_at: float | None = None  # loop time after which retries stop

    async def write(self, document: DocumentT) -> WriteOutcome:
        """Queue a document and wait until its group was written (or gave up)."""
        future: asyncio.Future[WriteOutcome] = asyncio.get_running_loop().create_future()
        self._pending.append((document, future))
        if len(self._pending) >= self._batch_size:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_wait, self._flush)
        return await asyncio.shield(future)

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
        if not self._pending:
            return
        group, self._pending = self._pending, []
        task = asyncio.create_task(self._write_group(group))
        self._groups.add(task)
        task.add_done_callback(self._groups.discard)

    async def _write_group(
        self, group: list[tuple[DocumentT, asyncio.Future[WriteOutcome]]]
    ) -> None:
        outcomes = await self._insert_with_retries([document for document, _ in group])
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

    async def _insert_with_retries(self, documents: list[DocumentT]) -> list[WriteOutcome]:
        outcomes = [WriteOutcome.RETRY_LATER] * len(documents)
        todo = list(range(len(documents)))  # indexes still to write
        loop = asyncio.get_running_loop()
        # Wall time, not the sum of sleeps: each failed attempt itself can take seconds.
        give_up_at = loop.time() + self._retry.give_up_after
        delay = self._retry.first_delay
        while todo:
            todo = await self._insert_once([documents[i] for i in todo], outcomes, todo)
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
        """Insert `documents` (at `indexes` of the group); return the indexes to retry."""
        started = time.perf_counter()
        try:
            await self._insert_many(documents)
        except BulkWriteError as error:
            self._observe(len(documents), started)
            return self._sort_write_errors(error, outcomes, indexes)
        except PyMongoError as error:
            self._observe(len(documents), started)
            if not _is_transient(error):
                logger.exception("bulk insert refused", extra={"documents": len(documents)})
                for index in indexes:
                    outcomes[index] = WriteOutcome.REJECTED
                return []
            logger.warning(
                "bulk insert failed, will retry",
                extra={"documents": len(documents), "error_type": type(error).__name__},
            )
            return indexes
        self._observe(len(documents), started)
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

    @staticmethod
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
