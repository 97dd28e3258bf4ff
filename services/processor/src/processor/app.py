"""The processor app factory: broker, subscriber wiring, health and metrics routes, AsyncAPI."""

import logging
from typing import TYPE_CHECKING, cast

from faststream.asgi import AsgiFastStream
from faststream.middlewares import AckPolicy
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue
from faststream.specification import AsyncAPI
from prometheus_client import CollectorRegistry

from activity_contract.events import ActivityMessage
from activity_contract.settings import (
    BROKER_RECONNECT_SECONDS,
    ConfigurationError,
    load_settings,
)
from activity_contract.topology import activity_queues
from processor.asyncapi_page import asyncapi_page_route, load_renderer, renderer_routes
from processor.bulk_writer import BulkWriter
from processor.documents import Activity, init_documents, insert_activities, mongo_client
from processor.handlers import dead_letter_undecodable, make_activity_handler
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


def build_broker(
    settings: ProcessorSettings,
    writer: BulkWriter[Activity],
    metrics: ProcessorMetrics | None = None,
) -> RabbitBroker:
    """The broker with the activity subscriber (and the documented publish side) wired.

    Without `metrics` it counts on a registry of its own that nothing serves.
    """
    metrics = metrics or ProcessorMetrics(CollectorRegistry())
    broker = RabbitBroker(
        settings.rabbitmq_url,
        # The metrics middleware is outermost, so it sees how each message was settled.
        middlewares=[metrics.broker_middleware(), dead_letter_undecodable(metrics)],
        graceful_timeout=GRACEFUL_TIMEOUT_SECONDS,
        reconnect_interval=BROKER_RECONNECT_SECONDS,
        # Our loggers propagate to the root handler, so FastStream's lines share LOG_FORMAT.
        logger=logging.getLogger("processor.broker"),
        log_level=logging.DEBUG,
        description="RabbitMQ carrying user activity events from ingest to processor.",
    )
    activity_queue = queue_objects(settings)[-1]
    broker.subscriber(
        activity_queue,
        ack_policy=AckPolicy.MANUAL,
        channel=Channel(prefetch_count=settings.processor_prefetch),
        title="user_activities:consume",
        description="The processor stores each event in MongoDB (collection `activities`) "
        "and acknowledges it after a durable write; invalid messages go to "
        "`user_activities.dlq`.",
    )(make_activity_handler(writer, metrics))
    # Documents the producing side of the channel; ingest publishes with the same contract.
    broker.publisher(
        activity_queue,
        persist=True,
        title="user_activities:publish",
        description="The ingest service publishes each accepted event here: persistent, "
        "with publisher confirms, `message_id` = `event_id`, `correlation_id` = HTTP "
        "request id, `content_type` = `application/json`.",
        schema=ActivityMessage,
    )
    return broker


def queue_objects(settings: ProcessorSettings) -> list[RabbitQueue]:
    """The dead-letter queue and the activity queue, as declared by both services."""
    return [
        RabbitQueue(queue.name, durable=True, arguments=cast("ClassicQueueArgs", queue.arguments))
        for queue in activity_queues(settings.queue_type, settings.queue_delivery_limit)
    ]


def bulk_writer(
    settings: ProcessorSettings, metrics: ProcessorMetrics | None = None
) -> BulkWriter[Activity]:
    """A writer grouping inserts by PROCESSOR_BATCH_SIZE and PROCESSOR_BATCH_WAIT_MS."""
    return BulkWriter(
        insert_activities,
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
    writer = bulk_writer(settings, metrics)
    broker = build_broker(settings, writer, metrics)
    dead_letter_queue = queue_objects(settings)[0]
    renderer = load_renderer()

    async def connect_database() -> None:
        await init_documents(client, settings.mongodb_database, settings.retention_days)

    async def declare_dead_letter_queue() -> None:
        await broker.declare_queue(dead_letter_queue)

    async def stop_retrying_soon() -> None:
        writer.begin_shutdown(retry_for=SHUTDOWN_RETRY_SECONDS)

    async def close() -> None:
        await writer.drain()
        await client.close()

    return AsgiFastStream(
        broker,
        logger=logging.getLogger("processor.app"),
        asgi_routes=[
            *health_routes(broker, client),
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
        on_startup=[connect_database],
        after_startup=[declare_dead_letter_queue],
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
