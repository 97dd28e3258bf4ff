"""Settling under failure, against the real RabbitMQ: bounded requeues on classic queues,
the topology before the first delivery, and readiness that sees a stalled consumer."""

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
import pytest
from faststream.asgi import AsgiFastStream
from faststream.rabbit import RabbitBroker
from faststream.rabbit.testing import TestRabbitBroker
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect

from activity_contract.events import ActivityIn
from activity_contract.topology import ACTIVITY_QUEUE, DEAD_LETTER_QUEUE, QueueType
from activity_testing.events import event_payload
from activity_testing.waiting import wait_until
from processor import handlers
from processor.app import build_broker, declare_topology, queue_objects
from processor.bulk_writer import BulkWriter, RetryPolicy
from processor.documents import ActivityStore, mongo_client
from processor.handlers import Progress
from processor.health import health_routes
from processor.metrics import ProcessorMetrics
from processor.settings import ProcessorSettings

pytestmark = pytest.mark.integration

FAST_RETRY = RetryPolicy(first_delay=0.01, max_delay=0.01, give_up_after=0.05)


async def always_down(_: Sequence[Any]) -> None:
    raise AutoReconnect("the database is down")


def unused_store(metrics: ProcessorMetrics) -> ActivityStore:
    """A store these tests never reach: their writer fails before it (no connection made)."""
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(connect=False)
    return ActivityStore(client["unused"], metrics)


def value(metrics: ProcessorMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def classic_processor(
    rabbit_url: str,
) -> AsyncIterator[tuple[RabbitBroker, ProcessorMetrics]]:
    """A processor on a classic queue whose database never answers."""
    settings = ProcessorSettings.model_construct(
        rabbitmq_url=rabbit_url, queue_type=QueueType.CLASSIC, queue_delivery_limit=3
    )
    metrics = ProcessorMetrics(CollectorRegistry())
    writer: BulkWriter[Any] = BulkWriter(always_down, 10, 0.005, FAST_RETRY, metrics)
    broker = build_broker(settings, unused_store(metrics), writer, metrics)
    await declare_topology(broker, settings)
    await broker.start()
    yield broker, metrics
    await broker.stop()


async def test_a_classic_queue_does_not_requeue_forever(
    classic_processor: tuple[RabbitBroker, ProcessorMetrics], rabbit_url: str
) -> None:
    """Classic queues count no deliveries: the processor counts and dead-letters itself."""
    broker, metrics = classic_processor
    message = ActivityIn.model_validate(event_payload()).to_message(datetime.now(UTC))
    await broker.publish(
        message.model_dump_json().encode(),
        ACTIVITY_QUEUE,
        persist=True,
        content_type="application/json",
        message_id=str(message.event_id),
    )

    dead = await _wait_for_one(rabbit_url, DEAD_LETTER_QUEUE, within=30)
    assert dead.headers["x-dead-letter-reason"] == "delivery_limit"
    assert dead.message_id == str(message.event_id)
    assert value(metrics, "event_tracker_processor_events_retried_total") == 2
    reason = {"reason": "delivery_limit"}
    assert value(metrics, "event_tracker_processor_events_dead_lettered_total", **reason) == 1


async def test_a_poison_message_queued_before_the_first_start_finds_its_dead_letter_queue(
    rabbit_url: str,
) -> None:
    """The whole topology is declared before consuming: the DLQ exists for delivery one."""
    settings = ProcessorSettings.model_construct(rabbitmq_url=rabbit_url)
    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        channel = await connection.channel()
        activity_queue = queue_objects(settings)[-1]
        await channel.declare_queue(
            ACTIVITY_QUEUE, durable=True, arguments=dict(activity_queue.arguments or {})
        )
        await channel.default_exchange.publish(
            aio_pika.Message(b"not json", content_type="application/json", message_id="poison"),
            ACTIVITY_QUEUE,
        )
    metrics = ProcessorMetrics(CollectorRegistry())
    writer: BulkWriter[Any] = BulkWriter(always_down, 10, 0.005, FAST_RETRY, metrics)
    broker = build_broker(settings, unused_store(metrics), writer, metrics)

    async def declare() -> None:
        await declare_topology(broker, settings)

    app = AsgiFastStream(broker, on_startup=[declare])
    async with app.start_lifespan_context():
        dead = await _wait_for_one(rabbit_url, DEAD_LETTER_QUEUE, within=30)
    assert (dead.message_id, dead.headers["x-dead-letter-reason"]) == ("poison", "invalid")


async def test_readiness_reports_a_consumer_that_stopped_moving(mongo_server_url: str) -> None:
    progress = Progress()
    broker = RabbitBroker()
    client = mongo_client(mongo_server_url)
    app = AsgiFastStream(broker, asgi_routes=health_routes(broker, client, progress))
    try:
        async with TestRabbitBroker(broker):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://p") as http:
                assert (await http.get("/health/ready")).json()["checks"]["consumer"] == "up"
                progress.took()  # a message in hand...
                progress.last_settled -= handlers.STALL_SECONDS + 1  # ...none settled since
                stalled = await http.get("/health/ready")
                progress.settled()
                moving = await http.get("/health/ready")
    finally:
        await client.close()
    assert stalled.status_code == 503
    assert stalled.json()["checks"]["consumer"] == "stalled"
    assert moving.json()["checks"]["consumer"] == "up"


async def _wait_for_one(
    rabbit_url: str, queue_name: str, within: float
) -> aio_pika.abc.AbstractIncomingMessage:
    received: list[aio_pika.abc.AbstractIncomingMessage] = []
    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=False)

        async def arrived() -> bool:
            message = await queue.get(fail=False, timeout=5)
            if message is not None:
                await message.ack()
                received.append(message)
            return message is not None

        assert await wait_until(arrived, within, interval=0.1), f"nothing reached {queue_name}"
    return received[0]
