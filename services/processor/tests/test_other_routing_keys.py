"""A message that reaches the queue under another routing key is settled like any other.

The queue may also be bound to an exchange (an operator's fanout, a replay tool): the
processor settles what it consumes from its queue, whatever the routing key said. It used
to leave such a message unacknowledged forever when it could not be read.
"""

import json
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from prometheus_client import CollectorRegistry
from pymongo.asynchronous.database import AsyncDatabase

from activity_contract.events import ActivityIn
from activity_contract.topology import ACTIVITY_QUEUE, DEAD_LETTER_QUEUE
from activity_testing.events import event_payload
from activity_testing.waiting import wait_until
from processor.app import build_processor, declare_topology
from processor.metrics import ProcessorMetrics
from processor.settings import ProcessorSettings

pytestmark = pytest.mark.integration


async def test_messages_under_a_fanout_binding_are_settled(
    rabbit_url: str, database: AsyncDatabase[dict[str, object]]
) -> None:
    settings = ProcessorSettings.model_construct(
        rabbitmq_url=rabbit_url, processor_batch_wait_ms=5, processor_prefetch=10
    )
    broker, _, _ = build_processor(settings, database, ProcessorMetrics(CollectorRegistry()))
    await declare_topology(broker, settings)
    await broker.start()
    try:
        connection = await aio_pika.connect(rabbit_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(ACTIVITY_QUEUE, ensure=True)
            fanout = await channel.get_exchange("amq.fanout")
            await queue.bind(fanout)
            event = ActivityIn.model_validate(event_payload()).to_message(datetime.now(UTC))
            for body in (b"not json", event.model_dump_json().encode()):
                await fanout.publish(
                    aio_pika.Message(body, content_type="application/json"), routing_key="x"
                )
            dead_letters = await channel.get_queue(DEAD_LETTER_QUEUE, ensure=True)

            async def settled() -> bool:
                queue_state = await channel.declare_queue(ACTIVITY_QUEUE, passive=True)
                return queue_state.declaration_result.message_count == 0 and bool(
                    await database["activities"].count_documents({})
                )

            assert await wait_until(settled, within=30, interval=0.1)
            dead = await dead_letters.get(timeout=5)
            assert dead is not None
            assert dead.body == b"not json"
            deaths: Any = dead.headers["x-death"]
            assert deaths[0]["reason"] == "rejected"
            await dead.ack()
            await queue.unbind(fanout)
    finally:
        await broker.stop()
    stored = await database["activities"].find_one({})
    assert stored is not None
    assert str(stored["_id"]) == str(event.event_id)
    assert json.loads(event.model_dump_json())["user_id"] == stored["user_id"]
