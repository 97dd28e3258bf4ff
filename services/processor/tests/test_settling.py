"""Settling under failure, against the real RabbitMQ: what the processor cannot store ends
in the dead-letter queue through RabbitMQ's own dead-lettering (at once when unreadable,
past the delivery limit when the failure lasts), the topology before the first delivery,
and readiness that sees a stalled consumer."""

import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from unittest.mock import patch

import aio_pika
import httpx
import pytest
from faststream.asgi import AsgiFastStream
from faststream.rabbit import RabbitBroker
from faststream.rabbit.testing import TestRabbitBroker
from prometheus_client import CollectorRegistry, make_asgi_app
from pymongo import AsyncMongoClient

from activity_contract.events import ActivityIn
from activity_contract.topology import ACTIVITY_QUEUE, DEAD_LETTER_QUEUE
from activity_testing.events import event_payload
from activity_testing.waiting import wait_until
from processor import handlers
from processor.app import build_processor, declare_topology, queue_objects
from processor.documents import mongo_client
from processor.handlers import Progress
from processor.health import health_routes
from processor.metrics import ProcessorMetrics
from processor.settings import ProcessorSettings

pytestmark = pytest.mark.integration

DELIVERY_LIMIT = 2


@pytest.fixture
async def database_down() -> AsyncIterator[AsyncMongoClient[dict[str, object]]]:
    """A client of a database that never answers: nothing listens on its port."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=100, connectTimeoutMS=100
    )
    yield client
    await client.close()


def value(metrics: ProcessorMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def settings_of(rabbit_url: str, **overrides: Any) -> ProcessorSettings:
    return ProcessorSettings.model_construct(
        rabbitmq_url=rabbit_url, processor_batch_wait_ms=5, **overrides
    )


async def test_a_message_whose_database_stays_down_is_dead_lettered_past_the_delivery_limit(
    rabbit_url: str, database_down: AsyncMongoClient[dict[str, object]]
) -> None:
    """Requeued while the database is down, each time counted by the queue; past its
    delivery limit, RabbitMQ itself moves the message to the dead-letter queue."""
    settings = settings_of(
        rabbit_url,
        queue_delivery_limit=DELIVERY_LIMIT,
        processor_write_retry_seconds=0.3,  # retried in-process this long, then requeued
    )
    metrics = ProcessorMetrics(CollectorRegistry())
    broker, _, _ = build_processor(settings, database_down["unused"], metrics)
    await declare_topology(broker, settings)
    await broker.start()
    try:
        message = ActivityIn.model_validate(event_payload()).to_message(datetime.now(UTC))
        await broker.publish(
            message.model_dump_json().encode(),
            ACTIVITY_QUEUE,
            persist=True,
            content_type="application/json",
            message_id=str(message.event_id),
        )
        dead = await _wait_for_one(rabbit_url, DEAD_LETTER_QUEUE, within=60)
    finally:
        await broker.stop()

    assert dead.message_id == str(message.event_id)
    assert dead.body == message.model_dump_json().encode()  # as it came
    deaths: Any = dead.headers["x-death"]
    [death] = deaths
    assert (death["reason"], death["queue"]) == ("delivery_limit", ACTIVITY_QUEUE)
    assert "x-dead-letter-reason" not in dead.headers  # not published by the processor
    # The first delivery and DELIVERY_LIMIT redeliveries, each one requeued.
    assert value(metrics, "event_tracker_processor_events_retried_total") == DELIVERY_LIMIT + 1
    assert value(metrics, "event_tracker_processor_events_persisted_total") == 0


async def test_a_poison_message_queued_before_the_first_start_finds_its_dead_letter_queue(
    rabbit_url: str, database_down: AsyncMongoClient[dict[str, object]]
) -> None:
    """The dead-letter queue is declared before consuming: it exists for delivery one."""
    settings = settings_of(rabbit_url)
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
    broker, _, _ = build_processor(settings, database_down["unused"], metrics)

    async def declare() -> None:
        await declare_topology(broker, settings)

    app = AsgiFastStream(broker, on_startup=[declare])
    async with app.start_lifespan_context():
        dead = await _wait_for_one(rabbit_url, DEAD_LETTER_QUEUE, within=30)
    assert (dead.message_id, dead.body) == ("poison", b"not json")
    deaths: Any = dead.headers["x-death"]
    assert deaths[0]["reason"] == "rejected"  # at its first delivery, by RabbitMQ
    assert deaths[0]["count"] == 1
    reason = {"reason": "invalid"}
    assert value(metrics, "event_tracker_processor_events_dead_lettered_total", **reason) == 1


async def test_readiness_waits_for_the_consumer_to_start(mongo_server_url: str) -> None:
    # FastStream answers HTTP once its start-up hooks ran, before the broker starts its
    # subscriber (which declares the activity queue): ready then, a publisher's first
    # message could find no queue.
    broker = RabbitBroker()
    broker.subscriber(ACTIVITY_QUEUE)(lambda body: None)
    client = mongo_client(mongo_server_url)
    app = AsgiFastStream(broker, asgi_routes=health_routes(broker, client, Progress()))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://p") as http:
            with patch.object(broker, "ping", return_value=True):
                starting = await http.get("/health/ready")
            async with TestRabbitBroker(broker):
                started = await http.get("/health/ready")
    finally:
        await client.close()
    assert starting.status_code == 503
    assert starting.json()["checks"]["consumer"] == "not_consuming"
    assert started.status_code == 200, started.json()


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


async def test_metrics_are_served_in_prometheus_text_format() -> None:
    registry = CollectorRegistry()
    ProcessorMetrics(registry)
    app = AsgiFastStream(RabbitBroker(), asgi_routes=[("/metrics", make_asgi_app(registry))])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://p") as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "event_tracker_processor_events_persisted_total 0.0" in response.text
