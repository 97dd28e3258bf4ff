"""The FastStream publisher and its policy: grouped, persistent, confirmed, routed, or 503.

Group commit: events of concurrent requests share one AMQP message and one publisher
confirm. A request's events join the group being gathered; the group is published at the
end of the event loop's current iteration when fewer than MAX_PUBLISHES_IN_FLIGHT
publishes await their confirm, otherwise as soon as one of them is confirmed (or the
group is full). Alone, a request is published at once; under load, groups grow to what
arrives during one confirm round trip. A request is answered 202 only once the message
carrying all its events is confirmed (design §4).
"""

import asyncio
import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from aio_pika.exceptions import DeliveryError, PublishError
from faststream.rabbit import Channel, RabbitBroker
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, Tracer

from activity_contract.events import SCHEMA_VERSION, ActivityMessage, QueueMessage
from activity_contract.settings import BROKER_RECONNECT_SECONDS
from activity_contract.startup import broker_refusals_named
from activity_contract.topology import (
    ACTIVITY_QUEUE,
    MAX_MESSAGE_BYTES,
    PUBLISH_OPERATION,
    activity_queues,
)
from activity_contract.tracing import current_span_context, span_of_many, trace_headers
from ingest.domain_errors import BrokerUnavailableError, PayloadTooLargeError
from ingest.metrics import IngestMetrics
from ingest.queues import BROKER_FAILURES, QueueKeeper
from ingest.settings import IngestSettings

logger = logging.getLogger(__name__)

READINESS_PING_SECONDS = 1.0
# Publishes awaiting their confirm at once; more requests wait and join the next group.
# Measured (bench/RESULTS.md): 2 keeps a confirm round trip of latency and groups large.
MAX_PUBLISHES_IN_FLIGHT = 2
# A group is published once it holds this many events or bytes, whatever is in flight.
MAX_GROUP_EVENTS = 1000
# The processor reads messages of at most MAX_MESSAGE_BYTES; a group closes before a
# request's events would take it past that (the margin holds the envelope and commas).
MAX_GROUP_BYTES = MAX_MESSAGE_BYTES - 64 * 1024
# A channel is opened afresh after a nacked publish at most this often.
CHANNEL_RENEWAL_SECONDS = 1.0


@dataclass
class _Group:
    """Events gathered for one message, and the futures of the requests waiting on it.

    One timer per group bounds every request in it (not one per request: measured, a
    timeout per request cost more CPU than the rest of the publish path).
    """

    events: list[bytes] = field(default_factory=list)  # each an ActivityMessage as JSON
    messages: list[ActivityMessage] = field(default_factory=list)
    size: int = 0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    deadline: asyncio.TimerHandle | None = None
    # Tracing on: the span of each request whose events it holds.
    requests: list[SpanContext] = field(default_factory=list)


class ActivityPublisher:
    """Publishes activity events; returns only after RabbitMQ confirmed the message."""

    def __init__(
        self, settings: IngestSettings, metrics: IngestMetrics, tracer: Tracer | None = None
    ) -> None:
        """Build the broker (not connected yet) from settings; count outcomes in `metrics`.

        With a `tracer`, each message's publish is a span linked to its requests' spans.
        """
        self._metrics = metrics
        self._tracer = tracer
        self._url = settings.rabbitmq_url
        # on_return_raises: a mandatory message that no queue takes becomes an error.
        self.broker = RabbitBroker(
            settings.rabbitmq_url,
            default_channel=Channel(on_return_raises=True),
            reconnect_interval=BROKER_RECONNECT_SECONDS,
            logger=logging.getLogger("ingest.broker"),  # propagates: follows LOG_FORMAT
            log_level=logging.DEBUG,
        )
        self._timeout = settings.publish_timeout_seconds
        self.queues = QueueKeeper(
            self.broker,
            activity_queues(settings.queue_type, settings.queue_delivery_limit),
            metrics,
            self._timeout,
        )
        self._publisher = self.broker.publisher(
            self.queues.activity_queue,
            persist=True,
            title=PUBLISH_OPERATION.title,
            description=PUBLISH_OPERATION.description,
            schema=QueueMessage,
        )
        self._group = _Group()
        self._flush_scheduled = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._renewal: asyncio.Task[None] | None = None
        self._renewed_at = -math.inf  # loop.time() may begin near 0: no renewal yet

    async def start(self) -> None:
        """Connect and declare the queues, so events are kept before any processor runs.

        RabbitMQ refusing the credentials or the vhost stops start-up with the cause.
        """
        async with broker_refusals_named(self._url):
            await self.broker.start()
        await self.queues.start()

    async def stop(self) -> None:
        """Publish what is gathered, wait for the confirms in flight, close the connection."""
        self._flush()
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=self._timeout)
        if self._renewal is not None:
            self._renewal.cancel()
        await self.queues.stop()
        await self.broker.stop()

    async def is_connected(self) -> bool:
        """Whether the broker connection is usable right now."""
        return await self.broker.ping(timeout=READINESS_PING_SECONDS)

    async def publish(self, messages: Sequence[ActivityMessage]) -> None:
        """Publish the events of one request; `BrokerUnavailableError` unless confirmed.

        Bounded by PUBLISH_TIMEOUT_SECONDS from the call (from when its group began).
        """
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        bodies = [message.model_dump_json(exclude_none=True).encode() for message in messages]
        size = sum(len(body) for body in bodies)
        if size > MAX_GROUP_BYTES:
            # JSON can grow once parsed and written again (9e15 becomes 9000000000000000.0):
            # refused now, it would be dead-lettered as too large after the 202.
            raise PayloadTooLargeError(
                f"The events take {size} bytes once encoded for the queue; one message "
                f"holds at most {MAX_GROUP_BYTES}: send fewer events per request."
            )
        if self._group.events and (
            self._group.size + size > MAX_GROUP_BYTES
            or len(self._group.events) + len(bodies) > MAX_GROUP_EVENTS
        ):
            self._flush()  # a request's events always travel in one message
        group = self._group
        if group.deadline is None:
            group.deadline = loop.call_later(self._timeout, self._expire, group)
        group.events.extend(bodies)
        group.size += size
        group.messages.extend(messages)
        group.waiters.append(waiter)
        if self._tracer is not None and (request := current_span_context()) is not None:
            group.requests.append(request)
        if len(group.events) >= MAX_GROUP_EVENTS or group.size >= MAX_GROUP_BYTES:
            self._flush()
        elif not self._flush_scheduled and len(self._in_flight) < MAX_PUBLISHES_IN_FLIGHT:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        try:
            await waiter
        except BROKER_FAILURES as error:
            self._metrics.publish_failures.labels(error_type=type(error).__name__).inc(
                len(messages)
            )
            raise BrokerUnavailableError([message.event_id for message in messages]) from error

    def _expire(self, group: _Group) -> None:
        """The group's time is up: its requests answer 503; unpublished, it is dropped."""
        if group is self._group:
            self._group = _Group()
        _settle(group.waiters, TimeoutError("no publisher confirm in time"))

    def _flush(self) -> None:
        self._flush_scheduled = False
        group = self._group
        if not group.waiters:
            return
        self._group = _Group()
        task = asyncio.create_task(self._publish_group(group))
        self._in_flight.add(task)
        task.add_done_callback(self._published)

    def _published(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._group.waiters and not self._flush_scheduled:
            self._flush()

    async def _publish_group(self, group: _Group) -> None:
        if self._tracer is None:
            await self._publish_now(group, None)
            return
        attributes = {
            "messaging.system": "rabbitmq",
            "messaging.destination.name": ACTIVITY_QUEUE,
            "messaging.batch.message_count": len(group.events),
        }
        name = f"{ACTIVITY_QUEUE} publish"
        with span_of_many(
            self._tracer, name, SpanKind.PRODUCER, group.requests, attributes
        ) as span:
            if not await self._publish_now(group, trace_headers()):
                span.set_status(StatusCode.ERROR)

    async def _publish_now(self, group: _Group, headers: dict[str, Any] | None) -> bool:
        """Publish the group and settle its requests; whether RabbitMQ confirmed it."""
        first = group.messages[0]
        if len(group.messages) == 1:  # the one-event kind: message_id is the event id
            body, message_id = group.events[0], first.event_id
        else:
            message_id = uuid.uuid4()
            body = _group_body(message_id, group.events)
        request_ids = {message.request_id for message in group.messages}
        try:
            async with asyncio.timeout(self._timeout):
                await self._publisher.publish(
                    body,
                    message_id=str(message_id),
                    # A group of several requests has no one request id (each event
                    # carries its own): it correlates by its own id.
                    correlation_id=(first.request_id if len(request_ids) == 1 else str(message_id)),
                    content_type="application/json",
                    headers=headers,
                    timeout=self._timeout,
                )
        except BROKER_FAILURES as error:
            logger.warning(
                "publish failed",
                extra={
                    "message_id": str(message_id),
                    "events": len(group.events),
                    "error_type": type(error).__name__,
                },
            )
            if _is_nack(error):
                self._renew_channel_soon()
            elif isinstance(error, PublishError):  # returned: no queue took it
                self.queues.missing(self.queues.activity_queue.name, found_by="unroutable publish")
            _settle(group.waiters, error)
            return False
        except BaseException as error:  # cancelled or a bug: never leave a request waiting
            _settle(group.waiters, TimeoutError(f"publish did not complete: {error!r}"))
            raise
        finally:
            if group.deadline is not None:
                group.deadline.cancel()
        self._metrics.published.inc(len(group.events))
        self._metrics.events_per_message.observe(len(group.events))
        _settle(group.waiters, None)
        return True

    def _renew_channel_soon(self) -> None:
        """Open the publishing channel afresh, once at a time, after the broker nacked.

        RabbitMQ before 3.13 can leave a channel nacking every publish to a quorum queue for
        good: when its first publish meets a queue record that still names a crashed leader,
        its queue client keeps asking that dead node (fixed upstream by rabbitmq-server
        commit bd9f2a1, "QQ: remove machine version 0 check in rabbit_fifo_client"). A new
        channel asks the current leader; otherwise nacks are rare (overflow), so this is cheap.
        """
        loop = asyncio.get_running_loop()
        if self._renewal is not None and not self._renewal.done():
            return
        if loop.time() - self._renewed_at < CHANNEL_RENEWAL_SECONDS:
            return
        self._renewed_at = loop.time()
        self._renewal = loop.create_task(self._renew_channel())

    async def _renew_channel(self) -> None:
        channel = await self.broker.config.channel_manager.get_channel()
        try:
            await channel.close()
            await channel.reopen()
        except BROKER_FAILURES as error:  # the connection's own recovery takes over
            logger.warning("channel renewal failed", extra={"error_type": type(error).__name__})
            return
        logger.info("publishing channel renewed after a nacked publish")


def _is_nack(error: BaseException) -> bool:
    """Whether RabbitMQ refused the message (basic.nack), not returned it or timed out.

    aiormq raises DeliveryError for a nack and its subclass PublishError for a return.
    """
    return isinstance(error, DeliveryError) and not isinstance(error, PublishError)


def _group_body(group_id: UUID, events: Sequence[bytes]) -> bytes:
    """An `ActivityGroupMessage` as JSON, framing its events already serialized one by one.

    Each event is serialized once, when its request arrives (its size bounds the group);
    the group only frames them. A test validates the result against the model.
    """
    head = f'{{"group_id":"{group_id}","schema_version":{SCHEMA_VERSION},"events":['
    return head.encode() + b",".join(events) + b"]}"


def _settle(waiters: Sequence[asyncio.Future[None]], error: BaseException | None) -> None:
    for waiter in waiters:
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)
            waiter.exception()  # retrieved: a request that timed out no longer awaits it
