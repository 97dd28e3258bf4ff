"""One client's bad event must not stall anyone else's: through the real pipeline.

Each trigger of the adversarial probe is refused at ingest (422), and the same event
published straight to the queue, as an older or foreign producer might, is dead-lettered
alone; every good event around it is stored and no message is left unacknowledged.
"""

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
import pytest

from activity_contract.events import ActivityIn
from activity_contract.topology import ACTIVITY_QUEUE, DEAD_LETTER_QUEUE
from activity_testing.events import event_payload
from activity_testing.processes import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

# The raw `metadata` JSON of each trigger (literals JSON has no value for included).
TRIGGERS = {
    "nul-in-key": '{"a\\u0000b": 1}',
    "int-beyond-64-bits": '{"n": 1180591620717411303424}',
    "nan": '{"a": NaN}',
    "infinity": '{"b": Infinity, "c": -Infinity}',
    "overflowing-number": '{"d": 1e400}',
}
GOOD_EVENTS = 50


def good_body(index: int) -> dict[str, Any]:
    return event_payload(event_id=str(uuid.uuid4()), user_id=f"other-client-{index}")


async def test_each_trigger_is_422_and_the_events_around_it_are_stored(
    client: httpx.AsyncClient,
    processor: ServiceProcess,
    queue_depth: Any,
    wait_until: Any,
    assert_stored_exactly_once: Any,
) -> None:
    processor.start()
    accepted: list[str] = []
    for name, metadata in TRIGGERS.items():
        bad = await client.post(
            "/api/v1/activities",
            content=f'{{"user_id": "m", "event_type": "page_view", "metadata": {metadata}}}',
            headers={"Content-Type": "application/json"},
        )
        assert bad.status_code == 422, name
        assert bad.json()["details"][0]["loc"] == ["body", "metadata"], name
        goods = await asyncio.gather(
            *(client.post("/api/v1/activities", json=good_body(i)) for i in range(GOOD_EVENTS))
        )
        assert {response.status_code for response in goods} == {202}
        accepted += [response.json()["event_id"] for response in goods]
    edges = [
        event_payload(timestamp="0001-01-01T00:00:00+14:00"),
        event_payload(timestamp="9999-12-31T23:59:59-12:00"),
        event_payload(user_id="look\u202ealike"),
    ]
    for body in edges:
        assert (await client.post("/api/v1/activities", json=body)).status_code == 422

    await assert_stored_exactly_once(accepted)
    assert await queue_depth(column="messages_unacknowledged") == 0


async def test_the_same_events_published_straight_are_dead_lettered_alone(
    processor: ServiceProcess,
    rabbit_url: str,
    queue_depth: Any,
    wait_until: Any,
    assert_stored_exactly_once: Any,
) -> None:
    processor.start()
    good = [
        ActivityIn.model_validate(good_body(i)).to_message(datetime.now(UTC))
        for i in range(GOOD_EVENTS)
    ]
    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        channel = await connection.channel()
        for index, message in enumerate(good):
            if index % 10 == 0 and index // 10 < len(TRIGGERS):
                name, metadata = list(TRIGGERS.items())[index // 10]
                template = good[0].model_dump(mode="json") | {"event_id": str(uuid.uuid4())}
                raw = json.dumps(template).replace(
                    '"metadata": {"path": "/home"}', f'"metadata": {metadata}'
                )
                assert metadata in raw
                await _publish(channel, raw.encode(), message_id=name)
            await _publish(channel, message.model_dump_json().encode(), str(message.event_id))

        await assert_stored_exactly_once([str(message.event_id) for message in good])
        assert await wait_until(
            lambda: _equals(queue_depth(DEAD_LETTER_QUEUE), len(TRIGGERS)), within=30
        )
        dead = []
        queue = await channel.get_queue(DEAD_LETTER_QUEUE, ensure=False)
        while letter := await queue.get(fail=False, timeout=5):
            await letter.ack()
            dead.append(letter)
    assert sorted(letter.message_id or "" for letter in dead) == sorted(TRIGGERS)
    # Each one rejected at its first delivery, and dead-lettered by RabbitMQ as it came.
    assert {_death_reason(letter) for letter in dead} == {"rejected"}
    assert await queue_depth() == 0


async def _publish(channel: aio_pika.abc.AbstractChannel, body: bytes, message_id: str) -> None:
    await channel.default_exchange.publish(
        aio_pika.Message(
            body,
            content_type="application/json",
            message_id=message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=ACTIVITY_QUEUE,
    )


def _death_reason(message: aio_pika.abc.AbstractIncomingMessage) -> str:
    """Why RabbitMQ dead-lettered a whole message (its `x-death` header)."""
    deaths: Any = message.headers["x-death"]
    return str(deaths[0]["reason"])


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)
