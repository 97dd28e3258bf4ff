"""What happens to one message: its events are written, then the message is settled.

Every message ends settled, whatever happens: acknowledged once each of its events is
stored (or was already), an event that cannot be stored dead-lettered alone with its
reason, and the message requeued (a bounded number of times) while the database is out.
"""

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from aio_pika.exceptions import AMQPError, ChannelInvalidStateError
from bson.errors import BSONError
from faststream import BaseMiddleware, StreamMessage
from faststream.rabbit.message import RabbitMessage
from faststream.rabbit.publisher import RabbitPublisher
from pydantic import ValidationError
from pymongo.errors import PyMongoError

from activity_contract.events import SCHEMA_VERSION, ActivityGroupMessage, ActivityMessage
from activity_contract.topology import ACTIVITY_QUEUE, QueueType
from processor.bulk_writer import BulkWriter, WriteOutcome
from processor.documents import ActivityStore, EncodedActivity
from processor.metrics import ProcessorMetrics

logger = logging.getLogger(__name__)

# What encoding a document raises when BSON cannot hold a value of it.
ENCODING_FAILURES = (BSONError, OverflowError, UnicodeError, ValueError, TypeError)
# What settling raises when the channel closed under the handler; the broker then puts
# the unacknowledged message back by itself.
CHANNEL_LOST = (ChannelInvalidStateError, AMQPError)
DEAD_LETTER_SECONDS = 5.0
# Classic queues count no deliveries: this process counts them, for this many messages.
DELIVERY_COUNTS_KEPT = 100_000
# Readiness reports a stall when messages are in hand and none was settled for this long:
# longer than the write retry budget (60 s) plus one slow attempt.
STALL_SECONDS = 120.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


class DeadLetterReason(StrEnum):
    """Why a message or an event went to `user_activities.dlq` (header `x-dead-letter-reason`)."""

    INVALID = "invalid"  # not JSON, or not a message of this contract
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    REFUSED = "refused"  # the database (or BSON) cannot store this event
    DELIVERY_LIMIT = "delivery_limit"  # classic queues: failed too often


class Progress:
    """Whether the consumer moves: messages in hand, and when one was last settled."""

    def __init__(self) -> None:
        """Nothing in hand yet."""
        self.in_hand = 0
        self.last_settled = time.monotonic()

    def took(self) -> None:
        """A message is being handled."""
        if self.in_hand == 0:
            self.last_settled = time.monotonic()
        self.in_hand += 1

    def settled(self) -> None:
        """A message was settled (or given back)."""
        self.in_hand -= 1
        self.last_settled = time.monotonic()

    def stalled(self) -> bool:
        """Messages in hand and none settled for STALL_SECONDS."""
        return self.in_hand > 0 and time.monotonic() - self.last_settled > STALL_SECONDS


class DeliveryCounts:
    """Deliveries per message id seen by this process (classic queues count none)."""

    def __init__(self, kept: int = DELIVERY_COUNTS_KEPT) -> None:
        """Remember the counts of at most `kept` messages, the most recent ones."""
        self._kept = kept
        self._counts: OrderedDict[str, int] = OrderedDict()

    def add(self, key: str) -> int:
        """Count one more failed delivery of `key`; return how many there were."""
        count = self._counts.pop(key, 0) + 1
        self._counts[key] = count
        if len(self._counts) > self._kept:
            self._counts.popitem(last=False)
        return count


class ActivityHandler:
    """Stores the events of each message and settles it; shared through FastStream's context."""

    def __init__(
        self,
        writer: BulkWriter[EncodedActivity],
        store: ActivityStore,
        dead_letters: RabbitPublisher,
        metrics: ProcessorMetrics,
        queue_type: QueueType,
        delivery_limit: int,
    ) -> None:
        """Write through `writer`; dead-letter through `dead_letters` (the DLQ publisher)."""
        self.writer = writer
        self.store = store
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.queue_type = queue_type
        self.delivery_limit = delivery_limit
        self.progress = Progress()
        self.deliveries = DeliveryCounts()
        self._event_messages = metrics.messages.labels(kind="activity")
        self._group_messages = metrics.messages.labels(kind="activity_group")

    async def handle(
        self, body: ActivityMessage | ActivityGroupMessage, message: RabbitMessage
    ) -> None:
        """Store every event of the message, then settle it."""
        self.progress.took()
        try:
            await self._handle(body, message)
        except CHANNEL_LOST as error:
            _log_channel_lost(message, error)
        finally:
            self.progress.settled()

    async def _handle(
        self, body: ActivityMessage | ActivityGroupMessage, message: RabbitMessage
    ) -> None:
        if isinstance(body, ActivityGroupMessage):
            events = body.events
            self._group_messages.inc()
        else:
            events = [body]
            self._event_messages.inc()
        self.metrics.consumed.inc(len(events))
        versions = {body.schema_version, *(event.schema_version for event in events)}
        if versions != {SCHEMA_VERSION}:
            await self.dead_letter_message(
                message, DeadLetterReason.UNKNOWN_SCHEMA_VERSION, f"schema_version {versions}"
            )
            return
        processed_at = datetime.now(UTC)
        redelivered = bool(message.raw_message.redelivered)
        writable: list[ActivityMessage] = []
        encoded: list[EncodedActivity] = []
        refused: list[tuple[ActivityMessage, str]] = []
        for event in events:
            try:
                document = EncodedActivity.of(event, processed_at, redelivered)
            except ENCODING_FAILURES as failure:
                refused.append((event, f"{type(failure).__name__}: {failure}"))
                continue
            writable.append(event)
            encoded.append(document)
        outcomes = await self.writer.write_many(encoded)
        if WriteOutcome.RETRY_LATER in outcomes:
            await self.requeue(message, "database unavailable")
            return
        refused += [
            (event, "the database refused the document")
            for event, outcome in zip(writable, outcomes, strict=True)
            if outcome is WriteOutcome.REJECTED
        ]
        for event, why in refused:
            if not await self._dead_letter_event(event, message, why):
                await self.requeue(message, "dead-letter queue unavailable")
                return
        duplicates = [
            event
            for event, outcome in zip(writable, outcomes, strict=True)
            if outcome is WriteOutcome.DUPLICATE
        ]
        if duplicates:
            await self._report_conflicts(duplicates)
        await message.ack()
        self._count(writable, outcomes, processed_at, message)

    def _count(
        self,
        events: Sequence[ActivityMessage],
        outcomes: Sequence[WriteOutcome],
        processed_at: datetime,
        message: RabbitMessage,
    ) -> None:
        stored = 0
        debug = logger.isEnabledFor(logging.DEBUG)
        for event, outcome in zip(events, outcomes, strict=True):
            if outcome is WriteOutcome.STORED:
                stored += 1
                latency = (processed_at - event.received_at).total_seconds()
                self.metrics.end_to_end_latency.observe(max(latency, 0.0))
            if debug:
                logger.debug(
                    "event stored",
                    extra={
                        "event_id": str(event.event_id),
                        "request_id": event.request_id or message.correlation_id,
                        "outcome": outcome.value,
                    },
                )
        self.metrics.persisted.inc(stored)
        self.metrics.duplicates.inc(outcomes.count(WriteOutcome.DUPLICATE))

    async def _report_conflicts(self, duplicates: Sequence[ActivityMessage]) -> None:
        """Count and log events whose id was stored earlier with other content.

        The first write wins (idempotency); a reused id with different content is made
        visible here, naming the id and both user ids, never the content.
        """
        try:
            stored = await self.store.stored([event.event_id for event in duplicates])
        except PyMongoError as error:
            logger.warning(
                "could not compare duplicates with what is stored",
                extra={"error_type": type(error).__name__},
            )
            return
        for event in duplicates:
            document = stored.get(event.event_id)
            if document is not None and not _same_content(event, document):
                self.metrics.conflicts.inc()
                logger.warning(
                    "event id reused with different content; the first one stays stored",
                    extra={
                        "event_id": str(event.event_id),
                        "stored_user_id": document.get("user_id"),
                        "user_id": event.user_id,
                    },
                )

    async def _dead_letter_event(
        self, event: ActivityMessage, message: RabbitMessage, error: str
    ) -> bool:
        logger.error(
            "event cannot be stored, dead-lettering it alone",
            extra={
                "event_id": str(event.event_id),
                "request_id": event.request_id or message.correlation_id,
                "error": error[:200],
            },
        )
        return await self._publish_dead_letter(
            event.model_dump_json(exclude_none=True).encode(),
            DeadLetterReason.REFUSED,
            error,
            message_id=str(event.event_id),
            correlation_id=event.request_id or message.correlation_id,
        )

    async def dead_letter_message(
        self, message: RabbitMessage, reason: DeadLetterReason, error: str
    ) -> None:
        """Send the whole message, as it came, to the dead-letter queue; then ack it."""
        logger.warning(
            "message dead-lettered",
            extra={
                "message_id": message.message_id,
                "request_id": message.correlation_id,
                "reason": reason.value,
                "error": error[:200],
            },
        )
        sent = await self._publish_dead_letter(
            message.body,
            reason,
            error,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
        )
        if sent:
            await message.ack()
        else:
            await self.requeue(message, "dead-letter queue unavailable")

    async def _publish_dead_letter(
        self,
        body: bytes,
        reason: DeadLetterReason,
        error: str,
        *,
        message_id: str | None,
        correlation_id: str | None,
    ) -> bool:
        try:
            await self.dead_letters.publish(
                body,
                headers={"x-dead-letter-reason": reason.value, "x-dead-letter-error": error[:500]},
                message_id=message_id,
                correlation_id=correlation_id,
                content_type="application/json",
                timeout=DEAD_LETTER_SECONDS,
            )
        except (TimeoutError, *CHANNEL_LOST, ConnectionError) as failure:
            logger.warning(
                "dead-letter queue unavailable",
                extra={"message_id": message_id, "error_type": type(failure).__name__},
            )
            return False
        self.metrics.dead_lettered.labels(reason=reason.value).inc()
        return True

    async def requeue(self, message: RabbitMessage, why: str) -> None:
        """Give the message back for another delivery; bounded by the delivery limit.

        Quorum queues count deliveries themselves (`reject` with requeue counts, unlike
        `nack` on RabbitMQ 4.3) and dead-letter past the limit; for classic queues this
        process counts and dead-letters the message itself.
        """
        if self.queue_type is QueueType.CLASSIC:
            key = message.message_id or hashlib.sha256(message.body).hexdigest()
            if self.deliveries.add(key) >= self.delivery_limit:
                await self.dead_letter_message(
                    message, DeadLetterReason.DELIVERY_LIMIT, f"{why}; delivery limit reached"
                )
                return
        logger.warning(
            "requeueing message",
            extra={"message_id": message.message_id, "request_id": message.correlation_id},
        )
        await message.reject(requeue=True)
        self.metrics.retried.inc()


def _same_content(event: ActivityMessage, document: dict[str, Any]) -> bool:
    """Whether the stored document holds this event (datetimes compared at BSON's ms)."""
    return (
        document.get("user_id") == event.user_id
        and document.get("event_type") == event.event_type
        and _millis(document.get("timestamp")) == _millis(event.timestamp)
        and document.get("metadata") == event.metadata
    )


def _millis(value: object) -> int | None:
    if not isinstance(value, datetime):
        return None
    return (value - _EPOCH) // _MILLISECOND


def _log_channel_lost(message: RabbitMessage, error: BaseException) -> None:
    logger.warning(
        "channel lost before settling, the broker redelivers",
        extra={
            "message_id": message.message_id,
            "request_id": message.correlation_id,
            "error_type": type(error).__name__,
        },
    )


# What FastStream raises while it decodes and validates a message body, before the
# handler runs: the message itself is bad, and no delivery will make it better.
UNDECODABLE = (ValidationError, json.JSONDecodeError, UnicodeDecodeError)
HANDLER_CONTEXT_NAME = "activity_handler"


class SettleUnhandled(BaseMiddleware):
    """Settles what the handler could not: undecodable messages and unexpected failures.

    With manual acknowledgement FastStream settles nothing itself. An undecodable or
    schema-invalid message is dead-lettered at once (with `unknown_schema_version` as the
    reason when it names a version this processor does not know); anything else our own
    code raised requeues the message, bounded by the delivery limit.
    """

    async def consume_scope(
        self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        """Run the handler; settle the message if it raised."""
        if not isinstance(msg, RabbitMessage) or msg.raw_message.routing_key != ACTIVITY_QUEUE:
            return await call_next(msg)  # not ours to settle (a test's own subscriber)
        handler: ActivityHandler = self.context.get(HANDLER_CONTEXT_NAME)
        try:
            return await call_next(msg)
        except UNDECODABLE as error:
            reason = _undecodable_reason(msg.body)
            await handler.dead_letter_message(msg, reason, f"{type(error).__name__}: {error}")
        except CHANNEL_LOST as error:
            _log_channel_lost(msg, error)
        except Exception:
            logger.exception(
                "message handling failed",
                extra={"message_id": msg.message_id, "request_id": msg.correlation_id},
            )
            await handler.requeue(msg, "handler failed")
        return None


def _undecodable_reason(body: bytes) -> DeadLetterReason:
    try:
        version = json.loads(body).get("schema_version", SCHEMA_VERSION)
    except (ValueError, AttributeError):
        return DeadLetterReason.INVALID
    if version != SCHEMA_VERSION:
        return DeadLetterReason.UNKNOWN_SCHEMA_VERSION
    return DeadLetterReason.INVALID
