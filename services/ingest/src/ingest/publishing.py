"""The FastStream publisher and its policy: persistent, confirmed, routed, or 503."""

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError, PublishError
from faststream.exceptions import IncorrectState
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue

from activity_contract.events import ActivityMessage
from activity_contract.settings import BROKER_RECONNECT_SECONDS
from activity_contract.topology import activity_queues
from ingest.errors import BrokerUnavailableError
from ingest.metrics import IngestMetrics
from ingest.settings import IngestSettings

if TYPE_CHECKING:
    from faststream.rabbit.schemas.queue import ClassicQueueArgs

logger = logging.getLogger(__name__)

# What a publish raises when RabbitMQ is down, slow, or returns the message as unroutable.
# During a reconnection aio-pika raises ChannelInvalidStateError, a RuntimeError and not an
# AMQPError; a returned (unroutable) message raises PublishError, an AMQPError.
PUBLISH_FAILURES = (
    TimeoutError,
    AMQPError,
    ChannelInvalidStateError,
    ConnectionError,
    IncorrectState,
)
READINESS_PING_SECONDS = 1.0
# A channel is opened afresh after a nacked publish at most this often.
CHANNEL_RENEWAL_SECONDS = 1.0


class ActivityPublisher:
    """Publishes activity messages; returns only after RabbitMQ confirmed each one."""

    def __init__(self, settings: IngestSettings, metrics: IngestMetrics) -> None:
        """Build the broker (not connected yet) from settings; count outcomes in `metrics`."""
        self._metrics = metrics
        # on_return_raises: a mandatory message that no queue takes becomes an error.
        self.broker = RabbitBroker(
            settings.rabbitmq_url,
            default_channel=Channel(on_return_raises=True),
            reconnect_interval=BROKER_RECONNECT_SECONDS,
            logger=logging.getLogger("ingest.broker"),  # propagates: follows LOG_FORMAT
            log_level=logging.DEBUG,
        )
        self._queues = [
            RabbitQueue(
                queue.name, durable=True, arguments=cast("ClassicQueueArgs", queue.arguments)
            )
            for queue in activity_queues(settings.queue_type, settings.queue_delivery_limit)
        ]
        self._publisher = self.broker.publisher(
            self._queues[-1],
            persist=True,
            title="user_activities:publish",
            description="Ingest publishes every accepted event here.",
            schema=ActivityMessage,
        )
        self._timeout = settings.publish_timeout_seconds
        self._renewal: asyncio.Task[None] | None = None
        self._renewed_at = 0.0

    async def start(self) -> None:
        """Connect and declare the queues, so events are kept before any processor runs."""
        await self.broker.start()
        for queue in self._queues:
            await self.broker.declare_queue(queue)

    async def stop(self) -> None:
        """Close the connection."""
        await self.broker.stop()

    async def is_connected(self) -> bool:
        """Whether the broker connection is usable right now."""
        return await self.broker.ping(timeout=READINESS_PING_SECONDS)

    async def publish(self, message: ActivityMessage, request_id: str) -> None:
        """Publish one message; raise `BrokerUnavailableError` unless it was confirmed."""
        try:
            # The publish's own timeout covers only the wait for the confirm; waiting for a
            # channel that is being restored is bounded by this outer one.
            async with asyncio.timeout(self._timeout):
                await self._publisher.publish(
                    message.model_dump_json().encode(),
                    message_id=str(message.event_id),
                    correlation_id=request_id,
                    content_type="application/json",
                    timeout=self._timeout,
                )
        except PUBLISH_FAILURES as error:
            self._metrics.publish_failures.labels(error_type=type(error).__name__).inc()
            logger.warning(
                "publish failed",
                extra={
                    "request_id": request_id,
                    "event_id": str(message.event_id),
                    "error_type": type(error).__name__,
                },
            )
            if _is_nack(error):
                self._renew_channel_soon()
            raise BrokerUnavailableError from error
        self._metrics.published.inc()
        logger.debug(
            "event published",
            extra={"request_id": request_id, "event_id": str(message.event_id)},
        )

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
        except PUBLISH_FAILURES as error:  # the connection's own recovery takes over
            logger.warning("channel renewal failed", extra={"error_type": type(error).__name__})
            return
        logger.info("publishing channel renewed after a nacked publish")

    async def publish_many(self, messages: Sequence[ActivityMessage], request_id: str) -> None:
        """Publish all messages concurrently and await their confirms together."""
        results = await asyncio.gather(
            *(self.publish(message, request_id) for message in messages),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result


def _is_nack(error: BaseException) -> bool:
    """Whether RabbitMQ refused the message (basic.nack), not returned it or timed out.

    aiormq raises DeliveryError for a nack and its subclass PublishError for a return.
    """
    return isinstance(error, DeliveryError) and not isinstance(error, PublishError)
