"""`event-tracker-dlq`, run as an operator runs it, against a real broker, processor and database.

Poison messages are published to `user_activities` and dead-lettered by RabbitMQ itself
(`x-death`, reason `rejected`); events the processor once could not store stand in the
dead-letter queue as it publishes them (`x-dead-letter-reason: refused`) and are stored
once replayed ("repaired": the cause is gone). Replays are selected, dry-run first, and
idempotent by event id; nothing replayed is stored twice and no poison leaves the queue.
"""

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest

from activity_contract.events import ActivityIn
from activity_contract.topology import (
    ACTIVITY_QUEUE,
    DEAD_LETTER_QUEUE,
    QueueType,
    activity_queues,
)
from activity_testing.events import event_payload
from activity_testing.plans import EXAMPLE_PLAN
from activity_testing.processes import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

POISON = (b"not json", b'{"event_id": "not-a-uuid"}')


def dlq(rabbit_url: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run the command as an operator would, on this test's vhost; its output."""
    result = subprocess.run(
        [sys.executable, "-m", "processor.dead_letters", *args],
        env={"RABBITMQ_URL": rabbit_url, "PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused_event(
    user: str, reason: str = "refused", **fields: Any
) -> tuple[str, aio_pika.Message]:
    """A valid event as the processor dead-letters one it could not store."""
    payload = event_payload(user_id=user, **fields)
    event = ActivityIn.model_validate(payload).to_message(datetime.now(UTC))
    return str(event.event_id), aio_pika.Message(
        event.model_dump_json(exclude_none=True).encode(),
        headers={"x-dead-letter-reason": reason, "x-dead-letter-error": "disk full"},
        message_id=str(event.event_id),
        content_type="application/json",
        timestamp=datetime.now(UTC),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def test_dead_letters_are_listed_shown_and_replayed_once_poison_left_alone(
    processor: ServiceProcess,
    rabbit_url: str,
    queue_depth: Any,
    wait_until: Any,
    assert_stored_exactly_once: Any,
) -> None:
    processor.start()
    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        channel = await connection.channel()
        for body in POISON:
            await channel.default_exchange.publish(
                aio_pika.Message(body, message_id=str(uuid.uuid4())), routing_key=ACTIVITY_QUEUE
            )
        assert await wait_until(lambda: _is(queue_depth(DEAD_LETTER_QUEUE), 2), within=30)
        refused = [refused_event(f"user-{n}") for n in range(3)]
        for _, message in refused:
            await channel.default_exchange.publish(message, routing_key=DEAD_LETTER_QUEUE)
    ids = [event_id for event_id, _ in refused]

    listed = dlq(rabbit_url, "list")
    assert "5 dead letters" in listed
    assert "rejected: 2" in listed
    assert "would store if replayed: 0" in listed
    assert "refused: 3" in listed
    assert "would store if replayed: 3" in listed
    shown = dlq(rabbit_url, "show", "3")
    assert f"message_id: {ids[0]}" in shown
    assert "reason: refused" in shown
    assert '"user_id": "user-0"' in shown
    assert await held(rabbit_url) == 5  # looking moved nothing out

    dry = dlq(rabbit_url, "replay")
    assert "would be replayed (dry run: --apply): 3" in dry
    assert "still refused, left in the queue: 2" in dry
    assert await held(rabbit_url) == 5

    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert "replayed to user_activities: 0" in dlq(
        rabbit_url, "replay", "--since", later, "--apply"
    )
    first = dlq(rabbit_url, "replay", "--reason", "refused", "--count", "2", "--apply")
    assert "replayed to user_activities: 2" in first
    await assert_stored_exactly_once(ids[:2])
    rest = dlq(rabbit_url, "replay", "--apply")
    assert "replayed to user_activities: 1" in rest
    assert "still refused" in rest
    await assert_stored_exactly_once(ids)

    # The same event dead-lettered again and replayed: stored once, not twice.
    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        channel = await connection.channel()
        again = aio_pika.Message(
            refused[0][1].body,
            headers={"x-dead-letter-reason": "refused"},
            message_id=ids[0],
            timestamp=datetime.now(UTC),
        )
        await channel.default_exchange.publish(again, routing_key=DEAD_LETTER_QUEUE)
    assert "replayed to user_activities: 1" in dlq(rabbit_url, "replay", "--apply")
    await assert_stored_exactly_once(ids)
    left = dlq(rabbit_url, "list")
    assert "2 dead letters" in left
    assert "rejected: 2" in left
    assert await held(rabbit_url) == 2


async def _is(depth: Any, expected: int) -> bool:
    return bool(await depth == expected)


async def held(rabbit_url: str) -> int:
    """Messages in the dead-letter queue, as the broker answers a passive declare (exact, where
    `rabbitmqctl`'s count of a quorum queue lags by its statistics interval)."""
    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
        return queue.declaration_result.message_count or 0


async def test_what_the_tracking_plan_refuses_is_left_in_the_queue(rabbit_url: str) -> None:
    """A purchase without its required fields, dead-lettered by the enforced plan: replayed
    under the same plan it would only come back, so it stays; under `warn` or no plan, it
    would store."""
    _, message = refused_event(
        "buyer", reason="plan_violation", event_type="purchase", metadata={"coupon": "X"}
    )
    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        channel = await connection.channel()
        dead_letter_queue = activity_queues(QueueType.QUORUM, delivery_limit=5)[0]
        await channel.declare_queue(
            dead_letter_queue.name, durable=True, arguments=dict(dead_letter_queue.arguments)
        )
        await channel.default_exchange.publish(message, routing_key=DEAD_LETTER_QUEUE)
    enforced = {"TRACKING_PLAN_DIR": str(EXAMPLE_PLAN)}

    assert "would store if replayed: 0" in dlq(rabbit_url, "list", env=enforced)
    dry = dlq(rabbit_url, "replay", "--apply", env=enforced)
    assert "replayed to user_activities: 0" in dry
    assert "plan_violation: 1 (1 events the tracking plan refuses)" in dry
    assert await held(rabbit_url) == 1
    warned = {**enforced, "TRACKING_PLAN_ENFORCEMENT": "warn"}
    assert "would be replayed (dry run: --apply): 1" in dlq(rabbit_url, "replay", env=warned)
    assert "would be replayed (dry run: --apply): 1" in dlq(rabbit_url, "replay")
