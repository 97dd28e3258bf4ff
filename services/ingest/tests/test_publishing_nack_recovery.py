"""A publish RabbitMQ refuses (basic.nack) answers 503 and renews the publishing channel.

RabbitMQ before 3.13 can leave a channel nacking every publish to a quorum queue after its
leader crashed (tests/e2e/test_cluster_faults.py meets it); here a real nack comes from the
queue's own overflow rule (`reject-publish`) under a `max-length` policy on this test's vhost.
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from activity_contract.events import ActivityMessage
from activity_contract.topology import ACTIVITY_QUEUE
from activity_testing.rabbitmq import rabbitmqctl, vhost_of
from ingest.http.errors import BrokerUnavailableError
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
        metadata={},
        received_at=now,
        request_id="request-nack",
    )


@pytest.fixture
async def publisher(rabbit_url: str) -> AsyncIterator[ActivityPublisher]:
    """A started publisher on this test's own vhost."""
    settings = IngestSettings(_env_file=None, rabbitmq_url=rabbit_url)
    publisher = ActivityPublisher(settings, IngestMetrics(CollectorRegistry()))
    await publisher.start()
    yield publisher
    await publisher.stop()


async def _published(publisher: ActivityPublisher) -> bool:
    try:
        await publisher.publish([_message()])
    except BrokerUnavailableError:
        return False
    return True


async def test_nacked_publish_answers_503_and_the_next_channel_publishes(
    publisher: ActivityPublisher, rabbit_url: str
) -> None:
    assert await _published(publisher)
    vhost = vhost_of(rabbit_url)
    policy = ("set_policy", "-p", vhost, "--apply-to", "queues", "full", f"^{ACTIVITY_QUEUE}$")
    await asyncio.to_thread(rabbitmqctl, *policy, '{"max-length": 1}')
    channel = await publisher.broker.config.channel_manager.get_channel()
    refused_on = await channel.get_underlay_channel()

    deadline = time.monotonic() + 30
    while await _published(publisher):  # until the policy applies: then nacked, a 503
        assert time.monotonic() < deadline, "publishes never refused"
    while await channel.get_underlay_channel() is refused_on:
        assert time.monotonic() < deadline, "publishing channel not renewed after a nack"
        await asyncio.sleep(0.05)

    await asyncio.to_thread(rabbitmqctl, "clear_policy", "-p", vhost, "full")
    while not await _published(publisher):
        assert time.monotonic() < deadline, "publishes still refused without the policy"
        await asyncio.sleep(0.2)
