"""Queue topology of SPEC §5: the activity queue and its dead-letter queue."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

ACTIVITY_QUEUE = "user_activities"
DEAD_LETTER_QUEUE = "user_activities.dlq"


class QueueType(StrEnum):
    """Durable RabbitMQ queue types the service supports."""

    QUORUM = "quorum"
    CLASSIC = "classic"


@dataclass(frozen=True)
class QueueDeclaration:
    """A durable queue to declare: its name and `x-` arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


def activity_queues(queue_type: QueueType, delivery_limit: int) -> tuple[QueueDeclaration, ...]:
    """Both queues, dead-letter queue first, with identical arguments on every declaration.

    Declaring is idempotent only while every declarer passes the same arguments, so both
    services build them here.
    """
    dead_letter = QueueDeclaration(DEAD_LETTER_QUEUE, {"x-queue-type": queue_type.value})
    arguments: dict[str, Any] = {
        "x-queue-type": queue_type.value,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
    }
    if queue_type is QueueType.QUORUM:
        # Classic queues have no delivery limit; quorum queues count every redelivery.
        arguments["x-delivery-limit"] = delivery_limit
        # Keep dead-lettered messages until the dead-letter queue confirms them.
        arguments["x-dead-letter-strategy"] = "at-least-once"
        arguments["x-overflow"] = "reject-publish"
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
    "`group_id`). `content_type` = `application/json`.",
)
CONSUME_OPERATION = OperationDoc(
    title="user_activities:consume",
    description="The processor stores each event in MongoDB (collection `activities`) and "
    "acknowledges a message once all its events are durably written; an event that cannot "
    "be stored goes alone to `user_activities.dlq`.",
)
DEAD_LETTER_OPERATION = OperationDoc(
    title="user_activities.dlq:publish",
    description="What cannot be stored, kept for inspection and replay: a whole message as "
    "it came (not JSON, not of this contract, an unknown `schema_version`, or past the "
    "delivery limit) or one event of a group alone (`ActivityMessage`) that the database "
    "refused. Headers: `x-dead-letter-reason` (`invalid`, `unknown_schema_version`, "
    "`refused`, `delivery_limit`) and `x-dead-letter-error`. Messages past a quorum "
    "queue's delivery limit arrive through RabbitMQ's own dead-lettering instead, with "
    "its `x-death` header.",
)
