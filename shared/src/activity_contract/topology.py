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
