"""The publisher against the real RabbitMQ: confirms, group commit, what a 503 names, the
channel renewed after a publish RabbitMQ refused (basic.nack), and queues declared again
after one was deleted."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import pytest
from prometheus_client import CollectorRegistry

from activity_contract.events import (
    QUEUE_MESSAGE,
    ActivityGroupMessage,
    ActivityMessage,
    UnreadableEvent,
)
from activity_contract.topology import ACTIVITY_QUEUE, DEAD_LETTER_QUEUE
from activity_testing.rabbitmq import allow_declaring, delete_queue, rabbitmqctl, vhost_of
from activity_testing.waiting import wait_until
from ingest.domain_errors import BrokerUnavailableError
from ingest.metrics import IngestMetrics
from ingest.publishing import ActivityPublisher
from ingest.queues import QUEUE_CHECK_SECONDS
from ingest.settings import IngestSettings

pytestmark = pytest.mark.integration


def message(request_id: str = "request-1") -> ActivityMessage:
    now = datetime.now(UTC)
    return ActivityMessage(
        event_id=uuid.uuid4(),
        user_id="user-1",
        event_type="page_view",
        timestamp=now,
        metadata={"path": "/home"},
        received_at=now,
        request_id=request_id,
    )


@pytest.fixture
def metrics() -> IngestMetrics:
    """The publisher's metrics, on a registry of this test's own."""
    return IngestMetrics(CollectorRegistry())


@pytest.fixture
async def publisher(rabbit_url: str, metrics: IngestMetrics) -> AsyncIterator[ActivityPublisher]:
    """A started publisher on this test's own vhost."""
    settings = IngestSettings(_env_file=None, rabbitmq_url=rabbit_url)
    publisher = ActivityPublisher(settings, metrics)
    await publisher.start()
    yield publisher
    await publisher.stop()


async def queued(rabbit_url: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message in the activity queue (fetched, then given back)."""
    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(ACTIVITY_QUEUE, passive=True)
        messages = []
        while (fetched := await queue.get(no_ack=False, fail=False)) is not None:
            messages.append(fetched)
        for fetched in messages:
            await fetched.nack(requeue=True)
        return messages


async def test_a_batch_travels_as_one_confirmed_group(
    publisher: ActivityPublisher, rabbit_url: str
) -> None:
    events = [message("request-3") for _ in range(200)]
    await publisher.publish(events)
    [group] = await queued(rabbit_url)
    body = QUEUE_MESSAGE.validate_json(group.body)
    assert isinstance(body, ActivityGroupMessage)
    carried = [each for each in body.events if isinstance(each, ActivityMessage)]
    assert len(carried) == len(body.events)  # every event published is one of the contract
    assert [each.event_id for each in carried] == [each.event_id for each in events]
    assert group.message_id == str(body.group_id)
    assert group.correlation_id == "request-3"
    assert group.delivery_mode == aio_pika.DeliveryMode.PERSISTENT


async def test_a_lone_event_travels_as_the_one_event_kind(
    publisher: ActivityPublisher, rabbit_url: str
) -> None:
    one = message("request-9")
    await publisher.publish([one])
    [single] = await queued(rabbit_url)
    assert QUEUE_MESSAGE.validate_json(single.body) == one
    assert (single.message_id, single.correlation_id) == (str(one.event_id), "request-9")


async def test_concurrent_requests_share_messages_and_each_is_confirmed(
    publisher: ActivityPublisher, rabbit_url: str
) -> None:
    requests = [[message(f"request-{i}")] for i in range(300)]
    await asyncio.gather(*(publisher.publish(events) for events in requests))
    messages = await queued(rabbit_url)
    read: list[ActivityMessage | UnreadableEvent] = []
    for each in messages:
        body = QUEUE_MESSAGE.validate_json(each.body)
        read += body.events if isinstance(body, ActivityGroupMessage) else [body]
    carried = [e for e in read if isinstance(e, ActivityMessage)]
    assert len(carried) == len(read)  # every event published is one of the contract
    assert sorted(str(e.event_id) for e in carried) == sorted(
        str(events[0].event_id) for events in requests
    )
    assert len(messages) < len(requests) / 2  # grouped: far fewer messages than requests
    mixed = [m for m in messages if m.correlation_id == m.message_id]
    assert mixed, "a group of several requests correlates by its own id"
    assert {e.request_id for e in carried} == {f"request-{i}" for i in range(300)}


async def test_an_unroutable_publish_is_a_503_naming_every_event_id(
    publisher: ActivityPublisher, rabbit_url: str
) -> None:
    delete_queue(rabbit_url, ACTIVITY_QUEUE)
    events = [message() for _ in range(3)]
    with pytest.raises(BrokerUnavailableError) as caught:
        await publisher.publish(events)
    assert caught.value.event_ids == [each.event_id for each in events]


def _queue_rows(rabbit_url: str) -> dict[str, str]:
    columns = ("name", "durable", "arguments", "--no-table-headers", "--quiet")
    output = rabbitmqctl("list_queues", "-p", vhost_of(rabbit_url), *columns)
    return {line.split("\t")[0]: line for line in output.splitlines() if line}


def _redeclarations(metrics: IngestMetrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "event_tracker_ingest_queue_redeclarations_total", {"outcome": outcome}
    )
    return value or 0.0


async def test_an_unroutable_publish_declares_both_queues_again(
    publisher: ActivityPublisher, metrics: IngestMetrics, rabbit_url: str
) -> None:
    declared = await asyncio.to_thread(_queue_rows, rabbit_url)
    await asyncio.to_thread(delete_queue, rabbit_url, ACTIVITY_QUEUE)
    await asyncio.to_thread(delete_queue, rabbit_url, DEAD_LETTER_QUEUE)
    with pytest.raises(BrokerUnavailableError):
        await publisher.publish([message()])

    assert await wait_until(lambda: _redeclarations(metrics, "declared") == 1, 30)
    assert await asyncio.to_thread(_queue_rows, rabbit_url) == declared  # same arguments
    assert await _published(publisher)
    assert len(await queued(rabbit_url)) == 1


async def test_a_missing_queue_is_reported_and_declared_again_once_it_can_be(
    publisher: ActivityPublisher, metrics: IngestMetrics, rabbit_url: str
) -> None:
    assert await publisher.queues.state() == "up"
    await asyncio.to_thread(allow_declaring, rabbit_url, False)
    try:
        await asyncio.to_thread(delete_queue, rabbit_url, DEAD_LETTER_QUEUE)

        # Found by the look-up alone: no publish meets the gap (the dead-letter queue
        # takes none), and an instance that is not ready gets no requests. Probes share
        # one look-up per QUEUE_CHECK_SECONDS: the one before the deletion may answer first.
        async def missing() -> bool:
            return await publisher.queues.state() == "missing"

        assert await wait_until(missing, 5 * QUEUE_CHECK_SECONDS)
        assert await wait_until(lambda: _redeclarations(metrics, "failed") >= 1, 30)
        assert _redeclarations(metrics, "declared") == 0
    finally:
        await asyncio.to_thread(allow_declaring, rabbit_url, True)

    async def up() -> bool:
        return await publisher.queues.state() == "up"

    assert await wait_until(up, 30), "the dead-letter queue was never declared again"
    assert DEAD_LETTER_QUEUE in await asyncio.to_thread(_queue_rows, rabbit_url)
    assert _redeclarations(metrics, "declared") == 1


async def _published(publisher: ActivityPublisher) -> bool:
    try:
        await publisher.publish([message("request-nack")])
    except BrokerUnavailableError:
        return False
    return True


async def test_nacked_publish_answers_503_and_the_next_channel_publishes(
    publisher: ActivityPublisher, rabbit_url: str
) -> None:
    # RabbitMQ before 3.13 can leave a channel nacking every publish to a quorum queue after
    # its leader crashed (tests/e2e/test_cluster_faults.py meets it); here a real nack comes
    # from the queue's own overflow rule (`reject-publish`) under a `max-length` policy.
    assert await _published(publisher)
    vhost = vhost_of(rabbit_url)
    policy = ("set_policy", "-p", vhost, "--apply-to", "queues", "full", f"^{ACTIVITY_QUEUE}$")
    await asyncio.to_thread(rabbitmqctl, *policy, '{"max-length": 1}')
    channel = await publisher.broker.config.channel_manager.get_channel()
    refused_on = await channel.get_underlay_channel()

    async def refused() -> bool:  # once the policy applies: nacked, a 503
        return not await _published(publisher)

    assert await wait_until(refused, 30, interval=0.05), "publishes never refused"

    async def renewed() -> bool:
        return await channel.get_underlay_channel() is not refused_on

    assert await wait_until(renewed, 30, interval=0.05), "channel not renewed after a nack"

    await asyncio.to_thread(rabbitmqctl, "clear_policy", "-p", vhost, "full")
    assert await wait_until(lambda: _published(publisher), 30), "still refused without policy"
