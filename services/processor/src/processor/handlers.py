"""What happens to one message: decode, write (grouped), then ack, reject or requeue."""

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from faststream import BaseMiddleware, StreamMessage
from faststream.rabbit import RabbitMessage

from activity_contract.events import ActivityMessage
from processor.bulk_writer import BulkWriter, WriteOutcome
from processor.documents import Activity

logger = logging.getLogger(__name__)

ActivityHandler = Callable[[ActivityMessage, RabbitMessage], Awaitable[None]]


def make_activity_handler(writer: BulkWriter[Activity]) -> ActivityHandler:
    """The subscriber function, bound to the processor's bulk writer."""

    async def store_activity(event: ActivityMessage, message: RabbitMessage) -> None:
        """Store one activity event; acknowledge it only after its write is durable."""
        document = Activity.from_message(
            event,
            processed_at=datetime.now(UTC),
            redelivered=bool(message.raw_message.redelivered),
        )
        outcome = await writer.write(document)
        log_context = {"event_id": str(event.event_id), "request_id": message.correlation_id}
        if outcome is WriteOutcome.STORED or outcome is WriteOutcome.DUPLICATE:
            await message.ack()
        elif outcome is WriteOutcome.REJECTED:
            logger.error("database refused the event, dead-lettering", extra=log_context)
            await message.reject(requeue=False)
        else:
            # reject(requeue=True), unlike nack, counts toward the quorum delivery limit.
            logger.warning("database unavailable, requeueing", extra=log_context)
            await message.reject(requeue=True)

    return store_activity


class DeadLetterUndecodable(BaseMiddleware):
    """Reject undecodable or schema-invalid messages without requeue: to the dead-letter queue.

    With manual acknowledgement FastStream settles nothing itself, so a message that fails
    before or outside the handler's own acking is settled here.
    """

    async def consume_scope(
        self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        """Run the handler; settle the message if it raised."""
        try:
            return await call_next(msg)
        except ValueError as error:  # includes pydantic's ValidationError and JSON errors
            logger.warning(
                "undecodable message, dead-lettering",
                extra={"message_id": msg.message_id, "error_type": type(error).__name__},
            )
            await msg.reject()
        except Exception:
            logger.exception("message handling failed, requeueing")
            if isinstance(msg, RabbitMessage):
                # Counts toward the delivery limit, so a failing message cannot loop forever.
                await msg.reject(requeue=True)
        return None
