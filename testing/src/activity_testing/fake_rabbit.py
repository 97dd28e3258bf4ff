"""An in-memory quorum queue for the explorers: deliveries, settlements, dead-lettering.

Deliveries are real `aio_pika.IncomingMessage` objects on a fake channel, so the code
under test settles through aio-pika and FastStream exactly as in production. The queue
behaves as RabbitMQ's quorum queue does: a message returned (rejected or nacked with
requeue, or left unsettled on a closed channel) counts a delivery; past the delivery
limit, or when rejected without requeue, RabbitMQ dead-letters it by itself.
"""

import itertools
from dataclasses import dataclass, field
from typing import Any

import aiormq
from aio_pika import IncomingMessage
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader

from activity_testing.faults import FaultPlan

SETTLE_FAULTS = ("channel_lost",)


@dataclass
class QueuedMessage:
    """A message in the queue, with everything the explorer knows about it."""

    body: bytes
    message_id: str
    routing_key: str
    correlation_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    deliveries: int = 0  # returned deliveries so far (the quorum queue's delivery count)
    settled: str | None = None  # ack, dead_lettered:<reason>


@dataclass
class Settlement:
    """One settlement the code under test made."""

    message: QueuedMessage
    action: str  # ack, reject, requeue
    delivery: int


class FakeChannel:
    """The consumer's channel: settlements go to the queue; it can be lost."""

    def __init__(self, queue: "FakeQueue", number: int) -> None:
        """Open."""
        self.queue = queue
        self.number = number
        self.is_closed = False
        self.unsettled: dict[int, QueuedMessage] = {}
        self.connection = _Connection()

    async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        """Acknowledge."""
        self._settle(delivery_tag, "ack")

    async def basic_reject(self, delivery_tag: int, requeue: bool = True) -> None:
        """Reject, with or without requeue."""
        self._settle(delivery_tag, "requeue" if requeue else "reject")

    async def basic_nack(
        self, delivery_tag: int, multiple: bool = False, requeue: bool = True
    ) -> None:
        """Nack (RabbitMQ 4.3 does not count it as a failed delivery)."""
        self._settle(delivery_tag, "nack_requeue" if requeue else "reject")

    def _settle(self, tag: int, action: str) -> None:
        if self.queue.plan.draw("settle", self.queue.now()) == "channel_lost":
            self.queue.lose_channel(self)
        if self.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError("channel closed")
        message = self.unsettled.pop(tag)
        self.queue.settled(message, action)


class _Connection:
    basic_nack = True


class FakeQueue:
    """`user_activities` as a quorum queue with its dead-letter queue."""

    def __init__(self, plan: FaultPlan, delivery_limit: int, nack_counts: bool, now: Any) -> None:
        """Empty; `nack_counts` False models RabbitMQ 4.3 (a nack is not a failed delivery)."""
        self.plan = plan
        self.delivery_limit = delivery_limit
        self.nack_counts = nack_counts
        self.now = now
        self.ready: list[QueuedMessage] = []
        self.dead_letters: list[tuple[QueuedMessage, str]] = []
        self.settlements: list[Settlement] = []
        self.listeners: list[Any] = []  # called with each Settlement as it happens
        # What a listener raised: the code under test would swallow it, the explorer must not.
        self.violations: list[AssertionError] = []
        self.deliveries = 0
        self._tags = itertools.count(1)
        self._channels = itertools.count(1)
        self.channel = FakeChannel(self, next(self._channels))

    def publish(self, message: QueuedMessage) -> None:
        """A message enters the queue."""
        self.ready.append(message)

    def deliver(self) -> IncomingMessage:
        """The next ready message, delivered on the current channel."""
        message = self.ready.pop(0)
        self.deliveries += 1
        tag = next(self._tags)
        self.plan.trace.note(f"t={self.now():.3f} deliver {message.message_id[:8]} as {tag}")
        self.channel.unsettled[tag] = message
        delivered = DeliveredMessage(
            delivery=spec.Basic.Deliver(
                consumer_tag="explorer",
                delivery_tag=tag,
                redelivered=message.deliveries > 0,
                exchange="",
                routing_key=message.routing_key,
            ),
            header=ContentHeader(
                properties=spec.Basic.Properties(
                    content_type="application/json",
                    headers={"x-delivery-count": message.deliveries, **message.headers}
                    if message.deliveries
                    else dict(message.headers),
                    message_id=message.message_id,
                    correlation_id=message.correlation_id,
                    delivery_mode=2,
                )
            ),
            body=message.body,
            channel=self.channel,  # type: ignore[arg-type]
        )
        return IncomingMessage(delivered, no_ack=False)

    def settled(self, message: QueuedMessage, action: str) -> None:
        """Apply a settlement as RabbitMQ would."""
        self.plan.trace.note(f"t={self.now():.3f} {message.message_id[:8]} settled: {action}")
        self.settlements.append(Settlement(message, action, message.deliveries))
        for listener in self.listeners:
            try:
                listener(self.settlements[-1])
            except AssertionError as violation:
                self.violations.append(violation)
        if action == "ack":
            message.settled = "ack"
        elif action == "reject":
            self._dead_letter(message, "rejected")
        else:
            counts = action == "requeue" or self.nack_counts
            self._return(message, counted=counts)

    def lose_channel(self, channel: FakeChannel) -> None:
        """The channel closes: its unsettled messages go back (each a counted delivery)."""
        if channel.is_closed:
            return
        self.plan.trace.note(f"t={self.now():.3f} channel {channel.number} lost")
        channel.is_closed = True
        for message in channel.unsettled.values():
            self._return(message, counted=True)
        channel.unsettled.clear()
        self.channel = FakeChannel(self, next(self._channels))

    def _return(self, message: QueuedMessage, counted: bool) -> None:
        if counted:
            message.deliveries += 1
        if message.deliveries > self.delivery_limit:
            self._dead_letter(message, "delivery_limit")
        else:
            self.ready.append(message)

    def _dead_letter(self, message: QueuedMessage, reason: str) -> None:
        message.settled = f"dead_lettered:{reason}"
        self.dead_letters.append((message, reason))
        self.plan.trace.note(f"t={self.now():.3f} {message.message_id} dead-lettered: {reason}")

    def in_hand(self) -> int:
        """Messages delivered and not settled."""
        return len(self.channel.unsettled)
