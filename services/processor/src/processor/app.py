"""The processor app factory: broker and subscriber, health and metrics routes, AsyncAPI."""

import logging
from typing import TYPE_CHECKING, Annotated, Any, cast

from faststream.asgi import AsgiFastStream
from faststream.context import Context
from faststream.middlewares import AckPolicy
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue
from faststream.rabbit.message import RabbitMessage
from faststream.specification import AsyncAPI
from prometheus_client import CollectorRegistry

from activity_contract.events import QueueMessage
from activity_contract.process import freeze_startup_objects
from activity_contract.settings import BROKER_RECONNECT_SECONDS, ConfigurationError, load_settings
from activity_contract.topology import (
    CONSUME_OPERATION,
    DEAD_LETTER_OPERATION,
    PUBLISH_OPERATION,
    activity_queues,
)
from processor.asyncapi_page import asyncapi_page_route, load_renderer, renderer_routes
from processor.bulk_writer import BulkWriter
from processor.documents import (
    ActivityStore,
    EncodedActivity,
    durable_database,
    init_documents,
    mongo_client,
)
from processor.handlers import HANDLER_CONTEXT_NAME, ActivityHandler, SettleUnhandled
from processor.health import health_routes, metrics_route
from processor.metrics import ProcessorMetrics
from processor.settings import ProcessorSettings

if TYPE_CHECKING:
    from faststream.rabbit.schemas.queue import ClassicQueueArgs

# In-flight handlers get this long to finish and ack at shutdown; the rest are redelivered.
GRACEFUL_TIMEOUT_SECONDS = 20.0
# At shutdown a failing database write is retried this long, then its message is requeued,
# so in-flight handlers finish well within GRACEFUL_TIMEOUT_SECONDS.
SHUTDOWN_RETRY_SECONDS = 10.0


class LoopContext(Context):
    """FastStream's `Context`, resolved on the event loop.

    fast_depends runs a synchronous `use` in a worker thread: FastStream's own `Context`
    costs a thread hop per argument and message. Measured on this machine (bench/RESULTS.md):
    the consume path took 414 us of CPU per message with two `Context` arguments, 203 us
    with these; nothing in resolving a context name needs a thread.
    """

    async def use(self, /, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """Put the named context value into the handler's arguments."""
        return super().use(**kwargs)


CurrentMessage = Annotated[RabbitMessage, LoopContext("message")]
ActivityHandlerDep = Annotated[ActivityHandler, LoopContext(HANDLER_CONTEXT_NAME)]


def queue_objects(settings: ProcessorSettings) -> list[RabbitQueue]:
    """The dead-letter queue and the activity queue, as both services declare them."""
    return [
        RabbitQueue(queue.name, durable=True, arguments=cast("ClassicQueueArgs", queue.arguments))
        for queue in activity_queues(settings.queue_type, settings.queue_delivery_limit)
    ]


async def declare_topology(broker: RabbitBroker, settings: ProcessorSettings) -> None:
    """Connect and declare both queues before the consumer starts.

    A message dead-lettered by the very first delivery then finds its queue.
    """
    await broker.connect()
    for queue in queue_objects(settings):
        await broker.declare_queue(queue)


def build_broker(
    settings: ProcessorSettings,
    store: ActivityStore,
    writer: BulkWriter[EncodedActivity],
    metrics: ProcessorMetrics,
) -> RabbitBroker:
    """The broker, its activity subscriber and the handler it uses (in FastStream's context)."""
    dead_letter_queue, activity_queue = queue_objects(settings)
    broker = RabbitBroker(
        settings.rabbitmq_url,
        # Dead letters are published with confirms, and must reach their queue.
        default_channel=Channel(on_return_raises=True),
        middlewares=[SettleUnhandled],
        graceful_timeout=GRACEFUL_TIMEOUT_SECONDS,
        reconnect_interval=BROKER_RECONNECT_SECONDS,
        # Our loggers propagate to the root handler, so FastStream's lines share LOG_FORMAT.
        logger=logging.getLogger("processor.broker"),
        log_level=logging.DEBUG,
        description="RabbitMQ carrying user activity events from ingest to processor.",
    )

    @broker.subscriber(
        activity_queue,
        ack_policy=AckPolicy.MANUAL,
        channel=Channel(prefetch_count=settings.processor_prefetch),
        title=CONSUME_OPERATION.title,
        description=CONSUME_OPERATION.description,
    )
    async def store_activities(
        body: QueueMessage, message: CurrentMessage, handler: ActivityHandlerDep
    ) -> None:
        """Store every event of the message; acknowledge it once they are durably written."""
        await handler.handle(body, message)

    # Documents the producing side of the channel; ingest publishes with the same contract.
    broker.publisher(
        activity_queue,
        persist=True,
        title=PUBLISH_OPERATION.title,
        description=PUBLISH_OPERATION.description,
        schema=QueueMessage,
    )
    dead_letters = broker.publisher(
        dead_letter_queue,
        persist=True,
        title=DEAD_LETTER_OPERATION.title,
        description=DEAD_LETTER_OPERATION.description,
    )
    broker.context.set_global(
        HANDLER_CONTEXT_NAME,
        ActivityHandler(
            writer,
            store,
            dead_letters,
            metrics,
            settings.queue_type,
            settings.queue_delivery_limit,
        ),
    )
    return broker


def bulk_writer(
    settings: ProcessorSettings, store: ActivityStore, metrics: ProcessorMetrics
) -> BulkWriter[EncodedActivity]:
    """A writer grouping inserts by PROCESSOR_BATCH_SIZE and PROCESSOR_BATCH_WAIT_MS."""
    return BulkWriter(
        store.insert_many,
        batch_size=settings.processor_batch_size,
        max_wait=settings.processor_batch_wait_ms / 1000,
        metrics=metrics,
    )


def create_app(settings: ProcessorSettings | None = None) -> AsgiFastStream:
    """Build the processor app; with no settings, read them from the environment."""
    settings = settings or load_settings(ProcessorSettings)
    if settings.mongodb_url is None:
        raise ConfigurationError(
            "invalid configuration: MONGODB_URL is not set (`make run` starts the whole stack"
            " with an embedded database)"
        )
    client = mongo_client(settings.mongodb_url)
    metrics = ProcessorMetrics(CollectorRegistry())
    store = ActivityStore(durable_database(client, settings.mongodb_database), metrics)
    writer = bulk_writer(settings, store, metrics)
    broker = build_broker(settings, store, writer, metrics)
    handler: ActivityHandler = broker.context.get(HANDLER_CONTEXT_NAME)
    renderer = load_renderer()

    async def connect_and_declare() -> None:
        await init_documents(client, settings.mongodb_database, settings.retention_days)
        await declare_topology(broker, settings)

    async def stop_retrying_soon() -> None:
        writer.begin_shutdown(retry_for=SHUTDOWN_RETRY_SECONDS)

    async def close() -> None:
        await writer.drain()
        await client.close()

    return AsgiFastStream(
        broker,
        logger=logging.getLogger("processor.app"),
        asgi_routes=[
            *health_routes(broker, client, handler.progress),
            metrics_route(metrics.registry),
            *renderer_routes(renderer),
        ],
        asyncapi_path=asyncapi_page_route(renderer),
        specification=AsyncAPI(
            broker,
            title="event-tracker",
            version="1.0.0",
            description="User activity events: queue `user_activities` (durable, "
            "dead-lettering to `user_activities.dlq`).",
        ),
        on_startup=[connect_and_declare],
        after_startup=[freeze_startup_objects],
        # FastStream runs on_shutdown, then stops the broker (waiting up to graceful_timeout
        # for in-flight handlers to write and ack), then after_shutdown.
        on_shutdown=[stop_retrying_soon],
        after_shutdown=[close],
    )


def create_asyncapi_app() -> AsgiFastStream:
    """The app with built-in defaults only, for `faststream docs gen`.

    The generated `asyncapi.yaml` describes the contract, so it must not depend on whatever
    environment the generator runs in.
    """
    return create_app(ProcessorSettings.model_construct(mongodb_url="mongodb://localhost:27017"))
