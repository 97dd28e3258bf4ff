"""What happens to one message: decode, write (grouped), then ack, reject or requeue."""

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

from aio_pika.exceptions import AMQPError, ChannelInvalidStateError
from fast_depends.library import CustomField
from faststream import BaseMiddleware, StreamMessage
from faststream.rabbit.message import RabbitMessage

from activity_contract.events import ActivityMessage
from processor.bulk_writer import BulkWriter, WriteOutcome
from processor.documents import Activity
from processor.metrics import ProcessorMetrics

if TYPE_CHECKING:
    from faststream._internal.context.repository import ContextRepo

logger = logging.getLogger(__name__)


class _MessageOnLoop(CustomField):
    """The message being handled, as FastStream's `Context("message")` gives it.

    fast_depends runs a custom field's synchronous `use` in a worker thread: FastStream's own
    `Context` costs one thread hop per message, at most 40 at once, which capped the
    processor far below the database. An async `use` is awaited in place.
    """

    def __init__(self) -> None:
        """Required, and passed through without validation."""
        super().__init__(cast=False, required=True)

    async def use(self, /, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """Put the current message into the handler's arguments."""
        assert self.param_name  # noqa: S101 - fast_depends names the field before use
        kwargs[self.param_name] = kwargs["context__"].get_local("message")
        return kwargs


CurrentMessage = Annotated[RabbitMessage, _MessageOnLoop()]
ActivityHandler = Callable[[ActivityMessage, RabbitMessage], Awaitable[None]]


def make_activity_handler(
    writer: BulkWriter[Activity], metrics: ProcessorMetrics
) -> ActivityHandler:
    """The subscriber function, bound to the processor's bulk writer and metrics."""

    async def store_activity(event: ActivityMessage, message: CurrentMessage) -> None:
        """Store one activity event; acknowledge it only after its write is durable."""
        document = Activity.from_message(
            event,
            processed_at=datetime.now(UTC),
            redelivered=bool(message.raw_message.redelivered),
        )
        outcome = await writer.write(document)
        # The request id of the HTTP request that published it travels as correlation_id.
        log_context = {
            "event_id": str(event.event_id),
            "request_id": message.correlation_id,
            "outcome": outcome.value,
        }
        if outcome is WriteOutcome.STORED or outcome is WriteOutcome.DUPLICATE:
            await message.ack()
            if outcome is WriteOutcome.STORED:
                metrics.observe_stored(event.received_at, document.processed_at)
            else:
                metrics.duplicates.inc()
            logger.debug("event stored", extra=log_context)
        elif outcome is WriteOutcome.REJECTED:
            logger.error("database refused the event, dead-lettering", extra=log_context)
            await message.reject(requeue=False)
            metrics.dead_lettered.labels(reason="refused").inc()
        else:
            # reject(requeue=True), unlike nack, counts toward the quorum delivery limit.
            logger.warning("database unavailable, requeueing", extra=log_context)
            await message.reject(requeue=True)
            metrics.retried.inc()

    return store_activity


class DeadLetterUndecodable(BaseMiddleware):
    """Reject undecodable or schema-invalid messages without requeue: to the dead-letter queue.

    With manual acknowledgement FastStream settles nothing itself, so a message that fails
    before or outside the handler's own acking is settled here.
    """

    def __init__(
        self,
        msg: Any,
        /,
        *,
        context: "ContextRepo",
        metrics: ProcessorMetrics | None = None,
    ) -> None:
        """Wrap one message; count what it settles in `metrics`."""
        super().__init__(msg, context=context)
        self.metrics = metrics

    async def consume_scope(
        self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        """Run the handler; settle the message if it raised."""
        log_context = {"message_id": msg.message_id, "request_id": msg.correlation_id}
        try:
            return await call_next(msg)
        except ValueError as error:  # includes pydantic's ValidationError and JSON errors
            logger.warning(
                "undecodable message, dead-lettering",
                extra={**log_context, "error_type": type(error).__name__},
            )
            await msg.reject()
            if self.metrics is not None:
                self.metrics.dead_lettered.labels(reason="undecodable").inc()
        except (ChannelInvalidStateError, AMQPError) as error:
            # The channel closed under the handler (broker connection lost): the broker has
            # already put the unacknowledged message back; a stored copy is a duplicate then.
            logger.warning(
                "channel lost before settling, the broker redelivers",
                extra={**log_context, "error_type": type(error).__name__},
            )
        except Exception:
            logger.exception("message handling failed, requeueing", extra=log_context)
            if isinstance(msg, RabbitMessage):
                # Counts toward the delivery limit, so a failing message cannot loop forever.
                await msg.reject(requeue=True)
                if self.metrics is not None:
                    self.metrics.retried.inc()
        return None


def dead_letter_undecodable(metrics: ProcessorMetrics) -> "partial[DeadLetterUndecodable]":
    """The broker middleware: `DeadLetterUndecodable` counting in `metrics`."""
    return partial(DeadLetterUndecodable, metrics=metrics)
