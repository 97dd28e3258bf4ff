"""The asyncio client: `track()` queues, a task on the application's loop sends batches."""

import asyncio
import atexit
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx

from event_tracker_client.batching import BatchSchedule
from event_tracker_client.config import ClientConfig
from event_tracker_client.delivery import BATCH_PATH, BatchDelivery, DeliveryStats, FailureCallback
from event_tracker_client.events import QueuedEvent, new_event
from event_tracker_client.queues import open_queue
from event_tracker_client.sync_client import drop_unsent, send_batch, settle, sleep_until

logger = logging.getLogger("event_tracker_client")


class AsyncClient:
    """Tracks events from coroutines without awaiting; a task sends them in batches.

    Use `async with AsyncClient(...)`, or `await close()`. Events still queued at
    interpreter exit (the loop gone) are sent then with a blocking request.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        on_failure: FailureCallback | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """Open the queue; the sending task starts with the first `track()` (or `start()`)."""
        self.config = config
        self.stats = DeliveryStats()
        self._on_failure = on_failure
        self._queue = open_queue(config.durable_path, config.max_queue_size)
        self._http = httpx.AsyncClient(
            base_url=config.base_url,
            headers=config.headers,
            timeout=config.request_timeout,
            transport=transport,
        )
        self._schedule = BatchSchedule(config.batch_size, config.flush_interval)
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._flushing = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        atexit.register(self._send_at_exit)

    def start(self) -> None:
        """Start the sending task on the running loop (a queue left on file is sent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def track(
        self,
        user_id: str,
        event_type: str,
        metadata: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
    ) -> str:
        """Queue an event and return its `event_id` at once (not a coroutine).

        When the queue is full the event is dropped (counted, logged), as with `Client`.
        """
        if self._closing:
            raise RuntimeError("the client is closed")
        self.start()
        event = new_event(user_id, event_type, metadata, timestamp)
        if not self._queue.put(event):
            self.stats.dropped_queue_full += 1
            logger.warning(
                "queue full (%d events): event %s dropped", len(self._queue), event.event_id
            )
            return event.event_id
        self.stats.tracked += 1
        queued = len(self._queue)
        if queued == 1 or queued >= self.config.batch_size:
            self._wake.set()
        return event.event_id

    async def flush(self) -> None:
        """Send everything queued now; return once settled (bound it with `asyncio.timeout`)."""
        self.start()
        self._flushing = True
        self._wake.set()
        while len(self._queue):
            self._settled.clear()
            await self._settled.wait()

    async def close(self) -> None:
        """Flush (for at most `shutdown_timeout` s), then stop."""
        if self._closing:
            return
        self._closing = True
        atexit.unregister(self._send_at_exit)
        self._wake.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=self.config.shutdown_timeout)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        durable = self.config.durable_path is not None
        drop_unsent(self._queue, durable, self.stats, self._on_failure)
        await self._http.aclose()
        self._queue.close()

    def __len__(self) -> int:
        """Events queued (not yet settled)."""
        return len(self._queue)

    async def __aenter__(self) -> "AsyncClient":
        """Start the client."""
        self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close it."""
        await self.close()

    async def _send(self, batch: list[QueuedEvent]) -> BatchDelivery:
        delivery = BatchDelivery(batch, self.config, self.stats, time.monotonic())
        while (delay := delivery.next_delay()) is not None:
            if delay:
                await asyncio.sleep(delay)  # close() cancels the task past shutdown_timeout
            body = delivery.body(datetime.now(UTC))
            try:
                response = await self._http.post(BATCH_PATH, content=body)
            except httpx.TransportError as error:
                delivery.no_answer(error, time.monotonic())
            else:
                delivery.answered(
                    response.status_code, response.headers, response.content, time.monotonic()
                )
        return delivery

    async def _next_batch(self) -> list[QueuedEvent] | None:
        while True:
            queued = len(self._queue)
            flushing = self._flushing or self._closing
            wait = self._schedule.seconds_until_due(queued, time.monotonic(), flushing=flushing)
            if wait == 0:
                return self._queue.peek(self.config.batch_size)
            if queued == 0:
                self._flushing = False
            if self._closing:
                return None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _run(self) -> None:
        while batch := await self._next_batch():
            try:
                settle(await self._send(batch), self._queue, self._on_failure)
            except Exception:  # never let the task die: the application would not know
                logger.exception("sending a batch failed; it stays queued")
                await asyncio.sleep(self.config.backoff_base)
            self._schedule.sent(time.monotonic())
            self._settled.set()
        self._settled.set()

    def _send_at_exit(self) -> None:
        """At interpreter exit, with the loop gone: send what is queued, blocking, bounded."""
        if not len(self._queue):
            return
        deadline = time.monotonic() + self.config.shutdown_timeout
        with httpx.Client(
            base_url=self.config.base_url,
            headers=self.config.headers,
            timeout=self.config.request_timeout,
        ) as http:
            while time.monotonic() < deadline and (
                batch := self._queue.peek(self.config.batch_size)
            ):
                delivery = send_batch(http, batch, self.config, self.stats, sleep_until(deadline))
                settle(delivery, self._queue, self._on_failure)
        drop_unsent(self._queue, self.config.durable_path is not None, self.stats, self._on_failure)
