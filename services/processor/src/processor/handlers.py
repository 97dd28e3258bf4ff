"""What happens to one message: its events are written, then the message is settled.

The subscriber's ack policy settles: a handler that returns has its message acknowledged,
one that raises `RejectMessage(requeue=True)` has it requeued (RabbitMQ counts the
delivery, and past the queue's delivery limit dead-letters it), and a message that cannot
be read is rejected without requeue, which RabbitMQ dead-letters at once. Each event of a
group meets its own fate: a message is acknowledged once every event is durable, stored
or dead-lettered alone with its reason.

With a tracking plan the processor judges every event again, trusting nothing published
to the queue: under `warn` it stores the violations with the event (beside any ingest
recorded), under `enforce` it dead-letters the event alone, with its reason in the headers
(`plan_violation`, `unplanned_event`), even when it is a message's only event.
"""

import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import NoReturn

from aio_pika.exceptions import AMQPError, ChannelInvalidStateError
from bson.errors import BSONError
from faststream.exceptions import RejectMessage
from faststream.rabbit.message import RabbitMessage
from faststream.rabbit.publisher import RabbitPublisher
from opentelemetry.trace import SpanKind, Tracer
from pydantic import ValidationError
from pymongo.errors import PyMongoError

from activity_contract.events import (
    SCHEMA_VERSION,
    ActivityGroupMessage,
    ActivityMessage,
    UnreadableEvent,
    read_queue_message,
)
from activity_contract.topology import ACTIVITY_QUEUE, MAX_MESSAGE_BYTES
from activity_contract.tracing import span_from_headers
from activity_contract.tracking_plan import ACCEPTED, UNPLANNED_RULE, TrackingPlan
from processor.bulk_writer import BulkWriter, WriteOutcome
from processor.documents import ActivityStore, EncodedActivity, same_client_content
from processor.metrics import ProcessorMetrics

logger = logging.getLogger(__name__)

# What encoding a document raises when BSON cannot hold a value of it.
ENCODING_FAILURES = (BSONError, OverflowError, UnicodeError, ValueError, TypeError)
# What a publish raises when the channel or the broker fails it.
PUBLISH_FAILURES = (TimeoutError, ChannelInvalidStateError, AMQPError, ConnectionError)
DEAD_LETTER_SECONDS = 5.0
# Readiness reports a stall when messages are in hand and none was settled for this long:
# longer than the write retry budget (60 s) plus one slow attempt.
STALL_SECONDS = 120.0


class DeadLetterReason(StrEnum):
    """Why a message or an event went to `user_activities.dlq`."""

    INVALID = "invalid"  # not JSON, or not a message (or event) of this contract
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    TOO_LARGE = "too_large"  # over the largest message the contract allows
    REFUSED = "refused"  # the database (or BSON) cannot store this event
    PLAN_VIOLATION = "plan_violation"  # its metadata breaks the plan, enforced
    UNPLANNED_EVENT = "unplanned_event"  # its type is not planned, and those are refused


# Events that read well but that the plan refuses: dead-lettered by the processor itself,
# with the reason in the headers, rather than by RabbitMQ, even alone in their message.
PLAN_REASONS = frozenset({DeadLetterReason.PLAN_VIOLATION, DeadLetterReason.UNPLANNED_EVENT})


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


def read_message(
    message: RabbitMessage, metrics: ProcessorMetrics
) -> ActivityMessage | ActivityGroupMessage:
    """The message body as the contract reads it, or `RejectMessage` (dead-letter it).

    The subscriber's decoder: one parse and validation by pydantic, and a message nobody
    can read is rejected here, counted and logged once, without a traceback.
    """
    body = message.body
    if len(body) > MAX_MESSAGE_BYTES:
        reject_unreadable(message, DeadLetterReason.TOO_LARGE, f"{len(body)} bytes", metrics)
    try:
        return read_queue_message(body)
    except ValidationError as error:
        reject_unreadable(message, _unreadable_reason(body), _summary(error), metrics)


def reject_unreadable(
    message: RabbitMessage, reason: DeadLetterReason, error: str, metrics: ProcessorMetrics
) -> NoReturn:
    """Count and log why, then reject without requeue: RabbitMQ dead-letters it as it came."""
    metrics.dead_lettered.labels(reason.value).inc()
    logger.warning(
        "message dead-lettered",
        extra={
            "message_id": message.message_id,
            "request_id": message.correlation_id,
            "reason": reason.value,
            "error": error[:200],
        },
    )
    raise RejectMessage(requeue=False)


class ActivityHandler:
    """Stores the events of each message, then lets the ack policy settle it."""

    def __init__(
        self,
        writer: BulkWriter[EncodedActivity],
        store: ActivityStore,
        dead_letters: RabbitPublisher,
        metrics: ProcessorMetrics,
        prefetch: int,
        tracer: Tracer | None = None,
        plan: TrackingPlan | None = None,
    ) -> None:
        """Write through `writer`; dead-letter single events through `dead_letters`.

        With a `tracer`, handling a message is a span continuing its publisher's trace;
        with a tracking `plan`, each event is judged by it.
        """
        self.tracer = tracer
        self.plan = plan
        self.writer = writer
        self.store = store
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.prefetch = prefetch
        self.progress = Progress()
        self._event_messages = metrics.messages.labels(kind="activity")
        self._group_messages = metrics.messages.labels(kind="activity_group")

    async def handle(
        self, body: ActivityMessage | ActivityGroupMessage, message: RabbitMessage
    ) -> None:
        """Store every event of the message; return to acknowledge it, raise to requeue."""
        self.progress.took()
        try:
            if self.tracer is None:
                await self._handle(body, message)
            else:
                await self._handle_traced(body, message, self.tracer)
        except RejectMessage:
            raise
        except Exception:
            logger.exception(
                "message handling failed, requeueing",
                extra={"message_id": message.message_id, "request_id": message.correlation_id},
            )
            self._requeue()
        finally:
            self.progress.settled()

    async def _handle_traced(
        self, body: ActivityMessage | ActivityGroupMessage, message: RabbitMessage, tracer: Tracer
    ) -> None:
        attributes = {
            "messaging.system": "rabbitmq",
            "messaging.destination.name": ACTIVITY_QUEUE,
            "messaging.message.id": message.message_id or "",
        }
        with span_from_headers(
            tracer, f"{ACTIVITY_QUEUE} process", SpanKind.CONSUMER, message.headers, attributes
        ) as span:
            settlement = "ack"
            try:
                await self._handle(body, message)
            except RejectMessage as settled:
                settlement = "requeue" if settled.extra_options.get("requeue") else "reject"
                raise
            finally:
                span.set_attribute("messaging.rabbitmq.settlement", settlement)

    async def _handle(
        self, body: ActivityMessage | ActivityGroupMessage, message: RabbitMessage
    ) -> None:
        if body.schema_version != SCHEMA_VERSION:
            reject_unreadable(
                message,
                DeadLetterReason.UNKNOWN_SCHEMA_VERSION,
                f"schema_version {body.schema_version}",
                self.metrics,
            )
        if isinstance(body, ActivityGroupMessage):
            events = body.events
            self._group_messages.inc()
        else:
            events = [body]
            self._event_messages.inc()
        self.metrics.consumed.inc(len(events))
        processed_at = datetime.now(UTC)
        redelivered = bool(message.raw_message.redelivered)
        writable: list[ActivityMessage] = []
        encoded: list[EncodedActivity] = []
        refused: list[tuple[ActivityMessage | UnreadableEvent, DeadLetterReason, str]] = []
        for event in events:
            if isinstance(event, UnreadableEvent):
                refused.append((event, DeadLetterReason.INVALID, event.error))
                continue
            if event.schema_version != SCHEMA_VERSION:
                why = f"schema_version {event.schema_version}"
                refused.append((event, DeadLetterReason.UNKNOWN_SCHEMA_VERSION, why))
                continue
            if self.plan is not None:
                refusal = self._judge(event, self.plan)
                if refusal is not None:
                    refused.append((event, *refusal))
                    continue
            try:
                encoded.append(EncodedActivity.of(event, processed_at, redelivered))
            except ENCODING_FAILURES as failure:
                why = f"{type(failure).__name__}: {failure}"
                refused.append((event, DeadLetterReason.REFUSED, why))
                continue
            writable.append(event)
        # Every message the broker lets this process hold is waiting: waiting longer for a
        # fuller group gains nothing.
        flush = self.progress.in_hand >= self.prefetch
        outcomes = await self.writer.write_many(encoded, flush=flush)
        if WriteOutcome.RETRY_LATER in outcomes:
            logger.warning(
                "database unavailable, requeueing",
                extra={"message_id": message.message_id, "request_id": message.correlation_id},
            )
            self._requeue()
        refused += [
            (event, DeadLetterReason.REFUSED, "the database refused the document")
            for event, outcome in zip(writable, outcomes, strict=True)
            if outcome is WriteOutcome.REJECTED
        ]
        if refused and not isinstance(body, ActivityGroupMessage):
            _, reason, why = refused[0]
            if reason not in PLAN_REASONS:
                reject_unreadable(message, reason, why, self.metrics)
        for event, reason, why in refused:
            if not await self._dead_letter_event(event, reason, why, message):
                self._requeue()
        duplicates = [
            event
            for event, outcome in zip(writable, outcomes, strict=True)
            if outcome is WriteOutcome.DUPLICATE
        ]
        if duplicates:
            await self._report_conflicts(duplicates)
        self._count(writable, outcomes, processed_at, message)

    def _judge(
        self, event: ActivityMessage, plan: TrackingPlan
    ) -> tuple[DeadLetterReason, str] | None:
        """Why the plan refuses `event`, or None; a flagged event gets its violations."""
        verdict = plan.judge(event.event_type, event.metadata)
        if verdict is ACCEPTED:
            return None
        outcome = "dead_lettered" if verdict.refuse else "flagged"
        label = plan.metric_label(event.event_type)
        for violation in verdict.violations:
            self.metrics.plan_violations.labels(label, violation.rule, outcome).inc()
        if verdict.refuse:
            reason = (
                DeadLetterReason.UNPLANNED_EVENT
                if verdict.rule_label == UNPLANNED_RULE
                else DeadLetterReason.PLAN_VIOLATION
            )
            why = "; ".join(f"{v.path}: {v.message}" for v in verdict.violations)
            return reason, why
        recorded = list(event.plan_violations or [])  # ingest's, kept
        seen = {(violation.path, violation.rule) for violation in recorded}
        recorded += [v for v in verdict.violations if (v.path, v.rule) not in seen]
        event.plan_violations = recorded
        return None

    def _requeue(self) -> None:
        """Give the message back; RabbitMQ counts the delivery (`reject`, unlike `nack`)."""
        self.metrics.retried.inc()
        raise RejectMessage(requeue=True)

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
        self.metrics.erased.inc(outcomes.count(WriteOutcome.ERASED))

    async def _report_conflicts(self, duplicates: Sequence[ActivityMessage]) -> None:
        """Count and log events whose id was stored earlier with other content.

        The first write wins (idempotency); a reused id with different content (what the
        client sent, not what ingest stamped on each try) is made visible here, naming the
        id and both user ids, never the content.
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
            if document is not None and not same_client_content(event, document):
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
        self,
        event: ActivityMessage | UnreadableEvent,
        reason: DeadLetterReason,
        error: str,
        message: RabbitMessage,
    ) -> bool:
        """Publish one event of a group alone to the dead-letter queue; whether confirmed."""
        if isinstance(event, UnreadableEvent):
            body = json.dumps(event.raw, default=str).encode()
            event_id = _raw_event_id(event.raw)
            request_id = message.correlation_id
        else:
            body = event.model_dump_json(exclude_none=True).encode()
            event_id = str(event.event_id)
            request_id = event.request_id or message.correlation_id
        logger.error(
            "event cannot be stored, dead-lettering it alone",
            extra={
                "event_id": event_id,
                "request_id": request_id,
                "reason": reason.value,
                "error": error[:200],
            },
        )
        try:
            await self.dead_letters.publish(
                body,
                headers={"x-dead-letter-reason": reason.value, "x-dead-letter-error": error[:500]},
                timestamp=datetime.now(UTC),  # when it was dead-lettered (`event-tracker-dlq`)
                message_id=event_id,
                correlation_id=request_id,
                content_type="application/json",
                timeout=DEAD_LETTER_SECONDS,
            )
        except PUBLISH_FAILURES as failure:
            logger.warning(
                "dead-letter queue unavailable",
                extra={"event_id": event_id, "error_type": type(failure).__name__},
            )
            return False
        self.metrics.dead_lettered.labels(reason.value).inc()
        return True


def _raw_event_id(raw: object) -> str | None:
    value = raw.get("event_id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) else None


def _unreadable_reason(body: bytes) -> DeadLetterReason:
    try:
        version = json.loads(body).get("schema_version", SCHEMA_VERSION)
    except (ValueError, AttributeError, RecursionError):
        return DeadLetterReason.INVALID
    if version != SCHEMA_VERSION:
        return DeadLetterReason.UNKNOWN_SCHEMA_VERSION
    return DeadLetterReason.INVALID


def _summary(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
        for problem in error.errors(include_url=False, include_input=False)[:5]
    )
