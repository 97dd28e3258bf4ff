"""The processor app factory: broker and subscriber, health and metrics routes, AsyncAPI."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, cast

from faststream.asgi import AsgiFastStream
from faststream.context import Context
from faststream.middlewares import AckPolicy
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue
from faststream.rabbit.message import RabbitMessage
from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry, make_asgi_app
from pymongo.asynchronous.database import AsyncDatabase

from activity_contract.events import QueueMessage
from activity_contract.process import freeze_startup_objects
from activity_contract.settings import (
    BROKER_RECONNECT_SECONDS,
    ConfigurationError,
    TrackingPlanSettings,
    load_settings,
)
from activity_contract.startup import broker_refusals_named
from activity_contract.topology import (
    CONSUME_OPERATION,
    DEAD_LETTER_OPERATION,
    PUBLISH_OPERATION,
    activity_queues,
)
from activity_contract.tracing import start_tracing
from activity_contract.tracking_plan import TrackingPlan
from processor.asyncapi_page import asyncapi_page_route, load_renderer, renderer_routes
from processor.bulk_writer import BulkWriter, RetryPolicy
from processor.documents import (
    ActivityStore,
    EncodedActivity,
    durable_database,
    init_documents,
    mongo_client,
)
from processor.handlers import ActivityHandler, read_message
from processor.health import health_routes
from processor.metrics import ProcessorMetrics
from processor.planned_messages import PlannedAsyncAPI
from processor.settings import ProcessorSettings

if TYPE_CHECKING:
    from faststream.rabbit.schemas.queue import ClassicQueueArgs

# At shutdown a failing database call is retried this long, then its message is requeued.
SHUTDOWN_RETRY_SECONDS = 5.0
# In-flight handlers get this long to finish and settle (FastStream waits for them); the
# rest are redelivered once the connection closes.
GRACEFUL_TIMEOUT_SECONDS = 15.0
# Then groups still being written get this long before they are abandoned (requeued).
DRAIN_SECONDS = 5.0
# So a shutdown ends within this bound, below Compose's 30 s stop grace period.
SHUTDOWN_BOUND_SECONDS = GRACEFUL_TIMEOUT_SECONDS + DRAIN_SECONDS + 5.0


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


def queue_objects(settings: ProcessorSettings) -> list[RabbitQueue]:
    """The dead-letter queue and the activity queue, as both services declare them."""
    return [
        RabbitQueue(queue.name, durable=True, arguments=cast("ClassicQueueArgs", queue.arguments))
        for queue in activity_queues(settings.queue_type, settings.queue_delivery_limit)
    ]


async def declare_topology(broker: RabbitBroker, settings: ProcessorSettings) -> None:
    """Connect and declare the dead-letter queue before the consumer starts.

    A message dead-lettered by the very first delivery then finds its queue. The activity
    queue is declared by its subscriber, on the subscriber's own channel: FastStream keeps
    a declared queue with the channel it was declared on, so declaring it here first made
    the subscriber consume on the default channel, without its prefetch limit. RabbitMQ
    refusing the credentials or the vhost stops start-up with the cause.
    """
    async with broker_refusals_named(settings.rabbitmq_url):
        await broker.connect()
    dead_letter_queue, _ = queue_objects(settings)
    await broker.declare_queue(dead_letter_queue)


def build_processor(
    settings: ProcessorSettings,
    database: AsyncDatabase[dict[str, object]],
    metrics: ProcessorMetrics,
    tracer: Tracer | None = None,
    plan: TrackingPlan | None = None,
) -> tuple[RabbitBroker, ActivityHandler, BulkWriter[EncodedActivity]]:
    """The broker with its activity subscriber, the handler it calls, and its writer.

    With a `tracer`, each message's handling and each bulk insert is a span; with a
    tracking `plan`, each event is judged by it.
    """
    dead_letter_queue, activity_queue = queue_objects(settings)
    broker = RabbitBroker(
        settings.rabbitmq_url,
        # Dead letters are published with confirms, and must reach their queue.
        default_channel=Channel(on_return_raises=True),
        graceful_timeout=GRACEFUL_TIMEOUT_SECONDS,
        reconnect_interval=BROKER_RECONNECT_SECONDS,
        # Our loggers propagate to the root handler, so FastStream's lines share LOG_FORMAT.
        logger=logging.getLogger("processor.broker"),
        log_level=logging.DEBUG,
        description="RabbitMQ carrying user activity events from ingest to processor.",
    )
    store = ActivityStore(database)
    writer = BulkWriter(
        store,
        batch_size=settings.processor_batch_size,
        max_wait=settings.processor_batch_wait_ms / 1000,
        retry=RetryPolicy(give_up_after=settings.processor_write_retry_seconds),
        metrics=metrics,
        tracer=tracer,
    )
    dead_letters = broker.publisher(
        dead_letter_queue,
        persist=True,
        title=DEAD_LETTER_OPERATION.title,
        description=DEAD_LETTER_OPERATION.description,
    )
    handler = ActivityHandler(
        writer, store, dead_letters, metrics, settings.processor_prefetch, tracer, plan
    )

    async def decode(message: RabbitMessage) -> Any:
        return read_message(message, metrics)

    # REJECT_ON_ERROR: returned = acked; unreadable = rejected, which RabbitMQ dead-letters;
    # the handler requeues (RejectMessage(requeue=True)) what may succeed later.
    @broker.subscriber(
        activity_queue,
        ack_policy=AckPolicy.REJECT_ON_ERROR,
        decoder=decode,
        channel=Channel(prefetch_count=settings.processor_prefetch),
        title=CONSUME_OPERATION.title,
        description=CONSUME_OPERATION.description,
    )
    async def store_activities(body: QueueMessage, message: CurrentMessage) -> None:
        """Store every event of the message; acknowledge it once each one is durable."""
        await handler.handle(body, message)

    # Documents the producing side of the channel; ingest publishes with the same contract.
    broker.publisher(
        activity_queue,
        persist=True,
        title=PUBLISH_OPERATION.title,
        description=PUBLISH_OPERATION.description,
        schema=QueueMessage,
    )
    return broker, handler, writer


def shutdown_hooks(
    writer: BulkWriter[EncodedActivity],
) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """What runs before the broker stops (stop retrying soon) and after (bounded drain)."""

    async def stop_retrying_soon() -> None:
        writer.begin_shutdown(retry_for=SHUTDOWN_RETRY_SECONDS)

    async def drain() -> None:
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                await writer.drain()
        except TimeoutError:
            logging.getLogger(__name__).warning("groups still unwritten at shutdown: requeued")

    return stop_retrying_soon, drain


def create_app(
    settings: ProcessorSettings | None = None, plan: TrackingPlan | None = None
) -> AsgiFastStream:
    """Build the processor app; with no settings, read them from the environment.

    The tracking plan is the settings' (`TRACKING_PLAN_DIR`) unless `plan` is given.
    """
    settings = settings or load_settings(ProcessorSettings)
    if settings.mongodb_url is None:
        raise ConfigurationError(
            "invalid configuration: MONGODB_URL is not set (`make run` starts the whole stack"
            " with an embedded database)"
        )
    plan = plan or settings.tracking_plan()  # compiled once; an invalid plan stops start-up
    client = mongo_client(settings.mongodb_url)
    metrics = ProcessorMetrics(CollectorRegistry())
    tracing = start_tracing(settings.otel_traces_exporter, "event-tracker-processor")
    broker, handler, writer = build_processor(
        settings,
        durable_database(client, settings.mongodb_database),
        metrics,
        tracing.tracer if tracing else None,
        plan,
    )
    renderer = load_renderer()
    stop_retrying_soon, drain = shutdown_hooks(writer)

    async def connect_and_declare() -> None:
        await init_documents(client, settings.mongodb_database, settings.retention_days)
        await declare_topology(broker, settings)

    async def close() -> None:
        await drain()
        await client.close()
        if tracing is not None:
            tracing.shutdown()  # the last spans are exported before the process ends

    return AsgiFastStream(
        broker,
        logger=logging.getLogger("processor.app"),
        asgi_routes=[
            *health_routes(broker, client, handler.progress),
            ("/metrics", make_asgi_app(metrics.registry)),
            *renderer_routes(renderer),
        ],
        asyncapi_path=asyncapi_page_route(renderer),
        specification=PlannedAsyncAPI(
            broker,
            plan=plan,
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
    environment the generator runs in, but for the tracking plan it documents:
    `TRACKING_PLAN_DIR` (`make asyncapi` names the repository's, tracking-plan/).
    """
    plan = load_settings(TrackingPlanSettings).tracking_plan()
    return create_app(
        ProcessorSettings.model_construct(mongodb_url="mongodb://localhost:27017"), plan
    )
