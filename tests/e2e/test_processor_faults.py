"""Processor faults: crashes, redelivery, shutdown, poison and refused messages (design §6)."""

import asyncio
import signal
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from activity_contract.events import ActivityIn, ActivityMessage
from activity_contract.topology import ACTIVITY_QUEUE, DEAD_LETTER_QUEUE
from activity_testing.events import PostOutcome, event_payload
from activity_testing.processes import ServiceProcess
from activity_testing.rabbitmq import close_vhost_connections

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

Document = dict[str, Any]


async def test_processor_killed_mid_stream_then_restarted_stores_each_event_once(
    processor: ServiceProcess,
    post_events: Any,
    wait_until: Any,
    activities: AsyncCollection[Document],
    assert_stored_exactly_once: Any,
) -> None:
    processor.start()
    progress = PostOutcome()
    posting = asyncio.create_task(post_events(3000, concurrency=16, outcome=progress))
    assert await wait_until(lambda: _count_at_least(activities, 500), within=90)

    # Off the event loop, so the posting goes on while the processor dies and restarts.
    await asyncio.to_thread(processor.stop, signal.SIGKILL)  # unacked messages go back
    accepted_while_down = len(progress.accepted) + 100
    assert await wait_until(lambda: len(progress.accepted) >= accepted_while_down, within=60)
    await asyncio.to_thread(processor.start)
    outcome = await posting

    assert outcome.statuses == {202: 3000}
    stored = await assert_stored_exactly_once(outcome.accepted, within=120)
    assert len(stored) == 3000


async def test_events_written_but_not_acknowledged_are_redelivered_and_stored_once(
    client: httpx.AsyncClient,
    start_processor: Any,
    rabbit_url: str,
    post_events: Any,
    wait_until: Any,
    queue_depth: Any,
    activities: AsyncCollection[Document],
    assert_stored_exactly_once: Any,
) -> None:
    # A long group window holds delivered messages in the bulk writer for seconds.
    start_processor(PROCESSOR_BATCH_WAIT_MS="20000", PROCESSOR_BATCH_SIZE="10000")
    outcome = await post_events(300)
    assert outcome.statuses == {202: 300}
    assert await wait_until(lambda: _all_delivered_none_settled(queue_depth), within=30)

    # The channel closes under the pending group: it is still written, its acks fail,
    # and RabbitMQ redelivers all 300 to the reconnected processor.
    await asyncio.to_thread(close_vhost_connections, rabbit_url)
    assert await wait_until(lambda: _count_at_least(activities, 300), within=60)
    stored = await assert_stored_exactly_once(outcome.accepted)
    assert len(stored) == 300


async def test_sigterm_drains_in_flight_writes_and_exits(
    start_processor: Any,
    post_events: Any,
    wait_until: Any,
    queue_depth: Any,
    activities: AsyncCollection[Document],
) -> None:
    processor = start_processor(PROCESSOR_BATCH_WAIT_MS="30000", PROCESSOR_BATCH_SIZE="10000")
    outcome = await post_events(200)
    assert outcome.statuses == {202: 200}
    assert await wait_until(lambda: _all_delivered_none_settled(queue_depth), within=30)
    assert await activities.count_documents({}) == 0

    exit_code = await asyncio.to_thread(processor.stop, signal.SIGTERM, 40.0)

    assert exit_code in (0, -signal.SIGTERM)
    assert await activities.count_documents({}) == 200  # written during the drain
    # ...and acknowledged before the connection closed: with no consumer left, a requeued
    # message would stay in the queue (its statistics lag by a few seconds).
    assert await wait_until(lambda: _equals(queue_depth(), 0), within=30)


async def test_ingest_sigterm_finishes_requests_in_flight(
    ingest: ServiceProcess,
    processor: ServiceProcess,
    posting_under_way: Any,
    assert_stored_exactly_once: Any,
) -> None:
    processor.start()
    posting, _ = await posting_under_way(2000, concurrency=8, accepted=200)

    exit_code = await asyncio.to_thread(ingest.stop, signal.SIGTERM, 30.0)
    outcome = await posting

    assert exit_code in (0, -signal.SIGTERM)
    assert set(outcome.statuses) <= {202, 503, 0}, outcome.statuses  # 0: refused connection
    await assert_stored_exactly_once(outcome.accepted, allowed=outcome.refused)


async def test_poison_messages_are_dead_lettered_and_valid_ones_behind_them_stored(
    client: httpx.AsyncClient,
    processor: ServiceProcess,
    rabbit_url: str,
    wait_until: Any,
    queue_depth: Any,
    assert_stored_exactly_once: Any,
) -> None:
    processor.start()
    poison = {
        "not-json": (b"{not json", "application/json"),
        "wrong-schema": (b'{"user_id": 1, "surprise": true}', "application/json"),
        "json-array": (b"[1, 2, 3]", "application/json"),
        "empty": (b"", "application/json"),
        "plain-text": (b"hello", "text/plain"),
        "bad-event-type": (_message_json(event_type="9 starts with a digit"), "application/json"),
    }
    valid = [
        ActivityIn.model_validate(event_payload()).to_message(datetime.now(UTC)) for _ in range(50)
    ]
    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        channel = await connection.channel()
        for name, (body, content_type) in poison.items():
            await _publish(channel, body, content_type, message_id=name)
        for message in valid:
            await _publish(
                channel,
                message.model_dump_json().encode(),
                "application/json",
                message_id=str(message.event_id),
            )
        stored = await assert_stored_exactly_once([str(message.event_id) for message in valid])
        assert len(stored) == 50
        assert await wait_until(lambda: _equals(queue_depth(DEAD_LETTER_QUEUE), 6), within=30)
        dead = await _drain(channel, DEAD_LETTER_QUEUE)
    assert sorted(message.message_id or "" for message in dead) == sorted(poison)
    # Rejected at once by the processor and dead-lettered by RabbitMQ as they came, not
    # after exhausting the delivery limit.
    assert {_death_reason(message) for message in dead} == {"rejected"}
    assert {message.body for message in dead} == {body for body, _ in poison.values()}


async def test_a_document_the_database_refuses_is_dead_lettered_alone(
    client: httpx.AsyncClient,
    processor: ServiceProcess,
    mongo_server_url: str,
    mongo_database: str,
    rabbit_url: str,
    post_events: Any,
    wait_until: Any,
    queue_depth: Any,
    assert_stored_exactly_once: Any,
) -> None:
    # The database itself refuses this user's documents (a permanent, per-document failure).
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(mongo_server_url)
    await mongo[mongo_database].create_collection(
        "activities", validator={"user_id": {"$ne": "refused-user"}}
    )
    await mongo.close()
    processor.start()

    refused = await client.post("/api/v1/activities", json=event_payload(user_id="refused-user"))
    assert refused.status_code == 202
    outcome = await post_events(200)
    assert outcome.statuses == {202: 200}

    stored = await assert_stored_exactly_once(outcome.accepted)
    assert len(stored) == 200
    assert await wait_until(lambda: _equals(queue_depth(DEAD_LETTER_QUEUE), 1), within=30)
    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        dead = await _drain(await connection.channel(), DEAD_LETTER_QUEUE)
    assert [message.message_id for message in dead] == [refused.json()["event_id"]]


async def test_a_message_rejected_again_and_again_reaches_the_dead_letter_queue(
    client: httpx.AsyncClient, rabbit_url: str, wait_until: Any, queue_depth: Any
) -> None:
    """The queue's delivery limit (5) ends any requeue loop, whatever the consumer does."""
    response = await client.post("/api/v1/activities", json=event_payload())
    assert response.status_code == 202
    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(ACTIVITY_QUEUE, ensure=False)
        deliveries = 0
        while deliveries < 20 and (message := await queue.get(fail=False, timeout=5)):
            deliveries += 1
            await message.reject(requeue=True)
        assert await wait_until(lambda: _equals(queue_depth(DEAD_LETTER_QUEUE), 1), within=30)
        dead = await _drain(channel, DEAD_LETTER_QUEUE)
    assert deliveries == 6  # the first delivery plus five redeliveries
    assert _death_reason(dead[0]) == "delivery_limit"
    assert [message.message_id for message in dead] == [response.json()["event_id"]]
    assert await queue_depth() == 0


def _message() -> ActivityMessage:
    return ActivityIn.model_validate(event_payload()).to_message(datetime.now(UTC))


def _message_json(**overrides: Any) -> bytes:
    return _message().model_copy(update=overrides).model_dump_json().encode()


async def _publish(
    channel: aio_pika.abc.AbstractChannel, body: bytes, content_type: str, message_id: str
) -> None:
    await channel.default_exchange.publish(
        aio_pika.Message(
            body,
            content_type=content_type,
            message_id=message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=ACTIVITY_QUEUE,
    )


async def _drain(
    channel: aio_pika.abc.AbstractChannel, queue_name: str
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take every message off `queue_name` (how an operator inspects the dead letters)."""
    queue = await channel.get_queue(queue_name, ensure=False)
    messages = []
    while message := await queue.get(fail=False, timeout=5):
        await message.ack()
        messages.append(message)
    return messages


def _death_reason(message: aio_pika.abc.AbstractIncomingMessage) -> str:
    """Why RabbitMQ dead-lettered a whole message (its `x-death` header)."""
    deaths: Any = message.headers["x-death"]
    return str(deaths[0]["reason"])


async def _count_at_least(collection: AsyncCollection[Document], expected: int) -> bool:
    return await collection.count_documents({}) >= expected


async def _all_delivered_none_settled(queue_depth: Any) -> bool:
    """Every message of the queue was delivered and none settled yet (events travel in
    groups, so there are fewer messages than events)."""
    unacknowledged = await queue_depth(column="messages_unacknowledged")
    return bool(unacknowledged > 0 and await queue_depth() == unacknowledged)


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)
