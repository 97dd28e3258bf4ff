"""Concurrent publishes (a batch) are each confirmed by the real RabbitMQ."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import pytest
from prometheus_client import CollectorRegistry

from activity_contract.events import ActivityMessage
from activity_contract.topology import ACTIVITY_QUEUE
from ingest.metrics import IngestMetrics
from ingest.publishing import ActivityPublisher
from ingest.settings import IngestSettings

pytestmark = pytest.mark.integration


def _message() -> ActivityMessage:
    now = datetime.now(UTC)
    return ActivityMessage(
        event_id=uuid.uuid4(),
        user_id="user-1",
        event_type="page_view",
        timestamp=now,
        metadata={"path": "/home"},
        received_at=now,
    )


@pytest.fixture
async def publisher(rabbit_url: str) -> AsyncIterator[ActivityPublisher]:
    """A started publisher on this test's own vhost."""
    settings = IngestSettings(_env_file=None, rabbitmq_url=rabbit_url)
    publisher = ActivityPublisher(settings, IngestMetrics(CollectorRegistry()))
    await publisher.start()
    yield publisher
    await publisher.stop()


async def test_concurrent_publishes_are_all_confirmed(
    publisher: ActivityPublisher, rabbit_url: str
) -> None:
    await publisher.publish_many([_message() for _ in range(200)], "request-3")

    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(ACTIVITY_QUEUE, passive=True)
    assert queue.declaration_result.message_count == 200
