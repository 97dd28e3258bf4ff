"""Bare limits of this machine: what the broker and the database take without our services."""

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import aio_pika
from faststream.rabbit import RabbitBroker, RabbitQueue
from pymongo import WriteConcern

from activity_contract.topology import QueueType
from bench.stack import SystemStack, say

if TYPE_CHECKING:
    from faststream.rabbit.schemas.queue import ClassicQueueArgs

INSERT_BATCH = 500
PUBLISH_WINDOW = 1000  # publishes awaiting their confirm at once


def sample_body() -> bytes:
    """A message body the size and shape of one event's message (plain JSON, no model)."""
    now = datetime.now(UTC).isoformat()
    message = {
        "event_id": str(uuid.uuid4()),
        "user_id": "bench-user-1",
        "event_type": "bench_bare",
        "timestamp": now,
        "metadata": {"path": "/page/1", "referrer": "bench", "n": 1},
        "received_at": now,
        "schema_version": 1,
    }
    return json.dumps(message, separators=(",", ":")).encode()


# The queue types compared: event-tracker's (quorum), and the baseline's (classic).
PRODUCT_QUEUE_TYPE = QueueType.QUORUM.value
BASELINE_QUEUE_TYPE = "classic"


def bare_queue(queue_type: str = PRODUCT_QUEUE_TYPE) -> dict[str, Any]:
    """Arguments of a durable queue of `queue_type` (default: the product's)."""
    return {"x-queue-type": queue_type}


async def _windowed(count: int, publish_one: Callable[[], Awaitable[object]], label: str) -> float:
    """Run `count` publishes with at most PUBLISH_WINDOW in flight; return messages/s."""
    window = asyncio.Semaphore(PUBLISH_WINDOW)
    done = 0
    started = time.perf_counter()
    last_said = started

    async def one() -> None:
        nonlocal done, last_said
        try:
            await publish_one()
        finally:
            window.release()
        done += 1
        now = time.perf_counter()
        if now - last_said >= 5:
            last_said = now
            say(f"    {label}: {done:,} confirmed, {done / (now - started):,.0f}/s")

    tasks = []
    for _ in range(count):
        await window.acquire()
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return count / (time.perf_counter() - started)


async def bare_publish_aio_pika(
    stack: SystemStack, count: int, queue_type: str = PRODUCT_QUEUE_TYPE
) -> float:
    """Persistent, mandatory, confirmed publishes straight on one aio-pika channel."""
    body = sample_body()
    connection = await aio_pika.connect(stack.rabbitmq_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        queue = await channel.declare_queue(
            "bench.bare_publish", durable=True, arguments=bare_queue(queue_type)
        )

        def publish() -> Awaitable[object]:
            message = aio_pika.Message(
                body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type="application/json",
                message_id=uuid.uuid4().hex,
            )
            return channel.default_exchange.publish(message, queue.name, mandatory=True)

        rate = await _windowed(count, publish, "bare publish (aio-pika)")
        await queue.delete(if_unused=False, if_empty=False)
    return rate


async def bare_publish_faststream(stack: SystemStack, count: int) -> float:
    """The same through a FastStream publisher object (as ingest publishes)."""
    body = sample_body()
    broker = RabbitBroker(stack.rabbitmq_url)
    queue = RabbitQueue(
        "bench.bare_publish_fs",
        durable=True,
        arguments=cast("ClassicQueueArgs", bare_queue()),
    )
    publisher = broker.publisher(queue, persist=True)
    await broker.start()
    try:
        declared = await broker.declare_queue(queue)

        def publish() -> Awaitable[object]:
            return publisher.publish(
                body, message_id=uuid.uuid4().hex, content_type="application/json"
            )

        rate = await _windowed(count, publish, "bare publish (FastStream)")
        await declared.delete(if_unused=False, if_empty=False)
    finally:
        await broker.stop()
    return rate


def _documents(count: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "_id": uuid.uuid4(),
            "user_id": f"bench-user-{i % 16}",
            "event_type": "bench_bare",
            "timestamp": now,
            "metadata": {"path": f"/page/{i % 16}", "referrer": "bench", "n": i % 16},
            "received_at": now,
            "processed_at": now,
            "redelivered": False,
            "schema_version": 1,
        }
        for i in range(count)
    ]


async def bare_insert(stack: SystemStack, count: int, concurrency: int) -> float:
    """insert_many of INSERT_BATCH plain documents, w=majority j=true; return documents/s."""
    client = stack.mongo()
    try:
        database = client.get_database(
            stack.database, write_concern=WriteConcern(w="majority", j=True)
        )
        collection = database["bench_bare_insert"]
        # Same indexes as the activities collection, so the server does the same work.
        await collection.create_index([("user_id", 1), ("timestamp", -1)])
        await collection.create_index([("event_type", 1), ("timestamp", -1)])
        batches = [_documents(INSERT_BATCH) for _ in range(count // INSERT_BATCH)]
        started = time.perf_counter()
        last_said = started
        done = 0

        async def lane(mine: list[list[dict[str, Any]]]) -> None:
            nonlocal done, last_said
            for batch in mine:
                await collection.insert_many(batch, ordered=False)
                done += len(batch)
                now = time.perf_counter()
                if now - last_said >= 5:
                    last_said = now
                    say(f"    bare insert: {done:,} written, {done / (now - started):,.0f}/s")

        await asyncio.gather(*(lane(batches[i::concurrency]) for i in range(concurrency)))
        rate = done / (time.perf_counter() - started)
        await collection.drop()
    finally:
        await client.close()
    return rate
