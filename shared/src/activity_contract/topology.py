"""Queue topology: the activity queue, its dead-letter queue, and the largest message."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

ACTIVITY_QUEUE = "user_activities"
DEAD_LETTER_QUEUE = "user_activities.dlq"
# The largest message ingest publishes and the processor reads: a whole batch request (at
# most 1 MiB of JSON, plus receipt fields per event) always fits in one. The processor
# dead-letters a larger message unread, so what it holds is bounded by prefetch x this.
MAX_MESSAGE_BYTES = 2 * 1024 * 1024


class QueueType(StrEnum):
    """Durable RabbitMQ queue types the service supports.

    Quorum only: the service relies on the queue's own delivery limit and dead-lettering
    (at-least-once) to settle what cannot be processed; classic queues have neither.
    """

    QUORUM = "quorum"


@dataclass(frozen=True)
class QueueDeclaration:
    """A durable queue to declare: its name and `x-` arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


def activity_queues(queue_type: QueueType, delivery_limit: int) -> tuple[QueueDeclaration, ...]:
    """Both queues, dead-letter queue first, with identical arguments on every declaration.

    Declaring is idempotent only while every declarer passes the same arguments, so both
    services build them here. A message rejected without requeue, or returned more than
    `delivery_limit` times, RabbitMQ moves to the dead-letter queue by itself, keeping it
    until the dead-letter queue has confirmed it (at-least-once dead-lettering).
    """
    dead_letter = QueueDeclaration(DEAD_LETTER_QUEUE, {"x-queue-type": queue_type.value})
    arguments: dict[str, Any] = {
        "x-queue-type": queue_type.value,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-strategy": "at-least-once",
        # at-least-once dead-lettering requires it: a full queue refuses new publishes.
        "x-overflow": "reject-publish",
    }
    return dead_letter, QueueDeclaration(ACTIVITY_QUEUE, arguments)


@dataclass(frozen=True)
class OperationDoc:
    """How an operation on the activity queue is described in the AsyncAPI contract."""

    title: str
    description: str


PUBLISH_OPERATION = OperationDoc(
    title="user_activities:publish",
    description="Ingest publishes every accepted event here, persistent and with publisher "
    "confirms. Two message kinds travel on the queue: one event (`ActivityMessage`, "
    "`message_id` = `event_id`, `correlation_id` = the HTTP request id) or a group of "
    "events (`ActivityGroupMessage`, `message_id` = `group_id`; each event carries its own "
    "`request_id`; `correlation_id` is the request id when all events share one, else the "
    "`group_id`). `content_type` = `application/json`. With a tracking plan, each planned "
    "event type is also a message of its own here (`PlannedEvent.<event_type>`: an "
    "`ActivityMessage` whose `metadata` meets that type's schema); under `warn` an event "
    "that does not carries `plan_violations`.",
)
CONSUME_OPERATION = OperationDoc(
    title="user_activities:consume",
    description="The processor stores each event in MongoDB (collection `activities`) and "
    "acknowledges a message once each of its events is durable: written with majority and "
    "journal acknowledgement, or dead-lettered alone with its reason. A message nobody can "
    "read (not JSON, not of this contract, an unknown `schema_version`, over 2 MiB) is "
    "rejected at once and RabbitMQ dead-letters it; one that keeps failing for a transient "
    "reason is requeued until the queue's delivery limit dead-letters it. With a tracking "
    "plan each event is judged again: under `warn` its violations are stored with it, under "
    "`enforce` it is dead-lettered alone.",
)
DEAD_LETTER_OPERATION = OperationDoc(
    title="user_activities.dlq:publish",
    description="What cannot be stored, kept for inspection and replay. Whole messages "
    "arrive through RabbitMQ's own dead-lettering, as they came, with its `x-death` header "
    "(reason `rejected`: unreadable; `delivery_limit`: failed too often). One event of a "
    "group that cannot be stored while the rest of its group can is published here alone "
    "(`ActivityMessage`) by the processor, with headers `x-dead-letter-reason` (`invalid`, "
    "`unknown_schema_version`, `refused`; `plan_violation`, `unplanned_event`: refused by "
    "the enforced tracking plan, even alone in its message) and `x-dead-letter-error`, and "
    "the time as its `timestamp`. `event-tracker-dlq` lists, shows and replays them.",
)
