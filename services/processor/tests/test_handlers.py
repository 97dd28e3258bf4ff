"""The subscriber with the in-memory test broker, writing to SecantusDB: logs and metrics."""

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from faststream.middlewares import AckPolicy
from faststream.rabbit import RabbitBroker, TestRabbitBroker
from prometheus_client import CollectorRegistry

from activity_contract.events import ActivityMessage
from activity_contract.topology import ACTIVITY_QUEUE
from processor.bulk_writer import BulkWriter
from processor.documents import Activity, init_documents, mongo_client
from processor.handlers import dead_letter_undecodable, make_activity_handler
from processor.metrics import ProcessorMetrics

pytestmark = pytest.mark.integration


@pytest.fixture
async def metrics(mongo_server_url: str, mongo_database: str) -> AsyncIterator[ProcessorMetrics]:
    """Documents bound to this test's database; fresh metrics."""
    client = mongo_client(mongo_server_url)
    await init_documents(client, mongo_database)
    yield ProcessorMetrics(CollectorRegistry())
    await client.close()


def build_broker(metrics: ProcessorMetrics) -> RabbitBroker:
    broker = RabbitBroker(
        middlewares=[metrics.broker_middleware(), dead_letter_undecodable(metrics)]
    )
    writer: BulkWriter[Activity] = BulkWriter(
        lambda documents: Activity.insert_many(documents, ordered=False),
        batch_size=10,
        max_wait=0.01,
        metrics=metrics,
    )
    broker.subscriber(ACTIVITY_QUEUE, ack_policy=AckPolicy.MANUAL)(
        make_activity_handler(writer, metrics)
    )
    return broker


def value(metrics: ProcessorMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def message(event_id: uuid.UUID) -> dict[str, Any]:
    now = datetime.now(UTC)
    return ActivityMessage(
        event_id=event_id,
        user_id="alice",
        event_type="page_view",
        timestamp=now,
        metadata={"secret": "do-not-log"},
        received_at=now - timedelta(seconds=2),
    ).model_dump(mode="json")


async def test_stored_event_logs_request_id_and_counts(
    metrics: ProcessorMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="processor")
    event_id = uuid.uuid4()
    broker = build_broker(metrics)
    async with TestRabbitBroker(broker) as test_broker:
        await test_broker.publish(
            message(event_id), ACTIVITY_QUEUE, correlation_id="req-from-http-1"
        )
        await test_broker.publish(
            message(event_id), ACTIVITY_QUEUE, correlation_id="req-from-http-2"
        )

    stored = [record for record in caplog.records if record.getMessage() == "event stored"]
    assert [(r.__dict__["request_id"], r.__dict__["outcome"]) for r in stored] == [
        ("req-from-http-1", "stored"),
        ("req-from-http-2", "duplicate"),
    ]
    assert all(record.__dict__["event_id"] == str(event_id) for record in stored)
    assert all(record.levelno == logging.DEBUG for record in stored)
    assert "do-not-log" not in caplog.text

    assert await Activity.get(event_id) is not None
    assert value(metrics, "event_tracker_processor_events_persisted_total") == 1
    assert value(metrics, "event_tracker_processor_events_duplicate_total") == 1
    assert value(metrics, "event_tracker_processor_bulk_write_size_count") == 2
    assert value(metrics, "event_tracker_processor_bulk_write_size_sum") == 2
    assert value(metrics, "event_tracker_processor_bulk_write_duration_seconds_count") == 2
    assert value(metrics, "event_tracker_processor_end_to_end_latency_seconds_count") == 1
    assert value(metrics, "event_tracker_processor_end_to_end_latency_seconds_sum") >= 2
    # FastStream's middleware: consumed and settled, labelled by exchange.queue only.
    handler = {
        "app_name": "processor",
        "broker": "rabbitmq",
        "handler": f"default.{ACTIVITY_QUEUE}",
    }
    assert value(metrics, "event_tracker_processor_received_messages_total", **handler) == 2
    acked = value(
        metrics,
        "event_tracker_processor_received_processed_messages_total",
        status="acked",
        **handler,
    )
    assert acked == 2


async def test_undecodable_message_is_counted_as_dead_lettered(
    metrics: ProcessorMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    broker = build_broker(metrics)
    async with TestRabbitBroker(broker) as test_broker:
        await test_broker.publish({"not": "an event"}, ACTIVITY_QUEUE, correlation_id="req-bad")

    warning = next(
        r for r in caplog.records if r.getMessage() == "undecodable message, dead-lettering"
    )
    assert warning.__dict__["request_id"] == "req-bad"
    assert (
        value(metrics, "event_tracker_processor_events_dead_lettered_total", reason="undecodable")
        == 1
    )
    assert value(metrics, "event_tracker_processor_events_persisted_total") == 0
