"""The thread-based client: `track()` queues, a background thread sends batches."""

import atexit
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx

from event_tracker_client.batching import BatchSchedule
from event_tracker_client.config import ClientConfig
from event_tracker_client.delivery import (
    BATCH_PATH,
    BatchDelivery,
    DeliveryStats,
    Failure,
    FailureCallback,
    report,
)
from event_tracker_client.events import QueuedEvent, new_event
from event_tracker_client.queues import EventQueue, open_queue

logger = logging.getLogger("event_tracker_client")


def send_batch(
    http: httpx.Client,
    batch: list[QueuedEvent],
    config: ClientConfig,
    stats: DeliveryStats,
    sleep: Callable[[float], bool],
) -> BatchDelivery:
    """Deliver `batch` with retries; `sleep(s)` returns False to give up waiting (closing)."""
    delivery = BatchDelivery(batch, config, stats, time.monotonic())
    while (delay := delivery.next_delay()) is not None:
        if delay and not sleep(delay):
            break
        body = delivery.body(datetime.now(UTC))
        try:
            response = http.post(BATCH_PATH, content=body)
        except httpx.TransportError as error:
            delivery.no_answer(error, time.monotonic())
        else:
            delivery.answered(
                response.status_code, response.headers, response.content, time.monotonic()
            )
    return delivery


def sleep_until(deadline: float) -> Callable[[float], bool]:
    """A `sleep` for `send_batch` that refuses to wait past `deadline` (monotonic)."""

    def sleep(seconds: float) -> bool:
        if time.monotonic() + seconds > deadline:
            return False
        time.sleep(seconds)
        return True

    return sleep


def settle(delivery: BatchDelivery, queue: EventQueue, callback: FailureCallback | None) -> None:
    """Take a finished batch's events off the queue; report the ones that failed."""
    queue.remove([*delivery.delivered, *(failure.event_id for failure in delivery.failures)])
    report(delivery.failures, callback)


def drop_unsent(
    queue: EventQueue, durable: bool, stats: DeliveryStats, callback: FailureCallback | None
) -> None:
    """At close: a memory queue's unsent events are lost (reported); a file keeps them."""
    left = len(queue)
    if not left:
        return
    if durable:
        logger.info("%d unsent event(s) kept in the durable queue for the next start", left)
        return
    failures: list[Failure] = []
    while batch := queue.peek(500):
        failures += [
            Failure(e.event_id, "dropped", None, "closed", "unsent at close") for e in batch
        ]
        queue.remove(e.event_id for e in batch)
    stats.dropped += len(failures)
    report(failures, callback)


class Client:
    """Tracks events from any thread without blocking; one background thread sends them.

    Use it as a context manager, or call `close()`; it is also flushed at interpreter exit.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        on_failure: FailureCallback | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Open the queue (a durable one resumes its events) and start the sending thread."""
        self.config = config
        self.stats = DeliveryStats()
        self._on_failure = on_failure
        self._queue = open_queue(config.durable_path, config.max_queue_size)
        self._http = httpx.Client(
            base_url=config.base_url,
            headers=config.headers,
            timeout=config.request_timeout,
            transport=transport,
        )
        self._schedule = BatchSchedule(config.batch_size, config.flush_interval)
        self._wake = threading.Condition()
        self._flushing = False
        self._closing = False
        self._closed = False
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-tracker-client", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def track(
        self,
        user_id: str,
        event_type: str,
        metadata: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
    ) -> str:
        """Queue an event and return its `event_id` at once.

        When the queue is full the event is dropped (counted in `stats.dropped_queue_full`,
        logged): the application is never blocked.
        """
        if self._closing:
            raise RuntimeError("the client is closed")
        event = new_event(user_id, event_type, metadata, timestamp)
        if not self._queue.put(event):
            self.stats.dropped_queue_full += 1
            logger.warning(
                "queue full (%d events): event %s dropped", len(self._queue), event.event_id
            )
            return event.event_id
        self.stats.tracked += 1
        queued = len(self._queue)
        if queued == 1 or queued >= self.config.batch_size:  # a window starts, or is full
            with self._wake:
                self._wake.notify_all()
        return event.event_id

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued now; wait until it is settled. False if `timeout` passed."""
        with self._wake:
            self._flushing = True
            self._wake.notify_all()
            return self._wake.wait_for(lambda: len(self._queue) == 0, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush (for at most `timeout`, default `shutdown_timeout` s), then stop."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        self._thread.join(self.config.shutdown_timeout if timeout is None else timeout)
        self._abort.set()  # a batch still waiting to retry stops waiting
        self._thread.join(self.config.request_timeout)
        if self._thread.is_alive():
            logger.warning("the sending thread is still in a request; leaving it")
            return
        drop_unsent(self._queue, self.config.durable_path is not None, self.stats, self._on_failure)
        self._http.close()
        self._queue.close()

    def __len__(self) -> int:
        """Events queued (not yet settled)."""
        return len(self._queue)

    def __enter__(self) -> "Client":
        """The client itself."""
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close it."""
        self.close()

    def _sleep(self, seconds: float) -> bool:
        return not self._abort.wait(seconds)

    def _next_batch(self) -> list[QueuedEvent] | None:
        """Wait until a batch is due; None when closing with nothing left."""
        with self._wake:
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
                # Never asleep for good: a `track()` racing this wait is seen within one interval.
                self._wake.wait(self.config.flush_interval if wait is None else wait)

    def _run(self) -> None:
        while not self._abort.is_set() and (batch := self._next_batch()):
            try:
                delivery = send_batch(self._http, batch, self.config, self.stats, self._sleep)
                settle(delivery, self._queue, self._on_failure)
            except Exception:  # never let the thread die: the application would not know
                logger.exception("sending a batch failed; it stays queued")
                self._sleep(self.config.backoff_base)
            with self._wake:
                self._schedule.sent(time.monotonic())
                if len(self._queue) == 0:
                    self._flushing = False
                self._wake.notify_all()
