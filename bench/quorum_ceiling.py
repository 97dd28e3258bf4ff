"""The ceiling of one quorum queue on this machine: `python -m bench.quorum_ceiling`.

One queue with the arguments the product gives `user_activities` (quorum, delivery limit,
dead-lettering), in a virtual host of its own that is deleted afterwards (or, with
`--in-vhost`, in the vhost of `--url`, e.g. a cluster elsewhere; the bench's own queues are
deleted afterwards, nothing else is touched). For two message
sizes, one event per message and a group of events per message (what a batch request
publishes), three phases, each bounded by a message count and a duration:

- publish: several publishers, each on its own connection and channel, persistent messages,
  publisher confirms with a window of unconfirmed messages per channel;
- consume: several consumers with a prefetch drain what was published, acking each message;
- both at once: publishers and consumers together, the steady state a deployment runs in.

Every figure is messages per second of one queue (events per second = messages x group size).
"""

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from activity_contract.events import ActivityGroupMessage, ActivityMessage
from activity_contract.topology import QueueType, activity_queues
from activity_testing.rabbitmq import DEFAULT_RABBITMQ_URL, rabbit_vhost, rabbitmqctl
from bench.stack import CpuMeter, say

EVENTS_PER_GROUP = 100
QUEUE = "bench.quorum_ceiling"
DEAD_LETTER_QUEUE = f"{QUEUE}.dlq"


@dataclass(frozen=True)
class Plan:
    """Bounds and concurrency of one run."""

    publishers: int
    consumers: int
    window: int  # unconfirmed messages in flight per publisher channel
    prefetch: int  # unacknowledged messages in flight per consumer channel
    count: int  # at most this many messages per phase and message size
    seconds: float  # and at most this long


@dataclass(frozen=True)
class Phase:
    """What one phase moved: messages per second, and the broker's CPU per message."""

    rate: float
    broker_us: float | None  # CPU microseconds of the RabbitMQ node per message

    def cells(self) -> str:
        """`rate | broker us` table cells."""
        broker = f"{self.broker_us:,.0f}" if self.broker_us is not None else "?"
        return f"{self.rate:,.0f} | {broker}"


@dataclass(frozen=True)
class Result:
    """The phases for one message size."""

    label: str
    events_per_message: int
    body_bytes: int
    publish: Phase
    consume: Phase
    both: Phase  # publish and consume at once: rate = the lower of the two


def event_body(now: datetime, number: int) -> str:
    """One event as the queue carries it (`ActivityMessage` JSON)."""
    return ActivityMessage(
        event_id=uuid.uuid4(),
        user_id=f"bench-user-{number % 64}",
        event_type="page_view",
        timestamp=now,
        metadata={"path": f"/page/{number % 16}", "referrer": "bench"},
        received_at=now,
    ).model_dump_json(exclude_none=True)


def message_body(events: int) -> bytes:
    """One event (`ActivityMessage`), or a group of them (`ActivityGroupMessage`)."""
    now = datetime.now(UTC)
    if events == 1:
        return event_body(now, 0).encode()
    group = ActivityGroupMessage(
        group_id=uuid.uuid4(),
        events=[ActivityMessage.model_validate_json(event_body(now, n)) for n in range(events)],
    )
    return group.model_dump_json(exclude_none=True).encode()


def queue_arguments() -> dict[str, dict[str, Any]]:
    """The bench's queues with the product's arguments, dead-lettering to the bench's own."""
    dead_letter, activity = activity_queues(QueueType.QUORUM, delivery_limit=5)
    return {
        DEAD_LETTER_QUEUE: dict(dead_letter.arguments),
        QUEUE: {**activity.arguments, "x-dead-letter-routing-key": DEAD_LETTER_QUEUE},
    }


async def declare(url: str) -> None:
    """Declare the bench's queues in the vhost of `url`."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name, arguments in queue_arguments().items():
            await channel.declare_queue(name, durable=True, arguments=arguments)


async def delete_queues(url: str) -> None:
    """Delete the bench's queues, messages and all."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in queue_arguments():
            await channel.queue_delete(name)


async def purge(url: str) -> None:
    """Empty the bench's queue between phases."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(QUEUE, passive=True)
        await queue.purge()


async def publish(url: str, body: bytes, plan: Plan, stop: asyncio.Event) -> int:
    """Publish until `plan.count` messages are confirmed, `stop` is set or time is up."""
    deadline = time.monotonic() + plan.seconds
    budget = plan.count
    confirmed = 0

    async def publisher() -> None:
        nonlocal budget, confirmed
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            window = asyncio.Semaphore(plan.window)

            async def one() -> None:
                nonlocal confirmed
                try:
                    message = aio_pika.Message(
                        body,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        content_type="application/json",
                        message_id=uuid.uuid4().hex,
                    )
                    await channel.default_exchange.publish(message, QUEUE, mandatory=True)
                    confirmed += 1
                finally:
                    window.release()

            tasks = set()
            while not stop.is_set() and time.monotonic() < deadline:
                await window.acquire()
                if budget <= 0:
                    window.release()
                    break
                budget -= 1
                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)

    await asyncio.gather(*(publisher() for _ in range(plan.publishers)))
    return confirmed


async def consume(
    url: str, plan: Plan, until: Callable[[int], bool], stop: asyncio.Event | None = None
) -> int:
    """Consume and ack each message until `until(acked)` holds or time is up."""
    deadline = time.monotonic() + plan.seconds
    acked = 0
    done = asyncio.Event()

    async def on_message(message: AbstractIncomingMessage) -> None:
        nonlocal acked
        await message.ack()
        acked += 1
        if until(acked):
            done.set()

    connections = [await aio_pika.connect(url) for _ in range(plan.consumers)]
    try:
        for connection in connections:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=plan.prefetch)
            queue = await channel.declare_queue(QUEUE, passive=True)
            await queue.consume(on_message)
        waits = [asyncio.create_task(event.wait()) for event in (done, stop) if event]
        try:
            await asyncio.wait(
                waits,
                timeout=max(deadline - time.monotonic(), 0),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for wait in waits:
                wait.cancel()
    finally:
        for connection in connections:
            await connection.close()
    return acked


def broker_pid() -> int | None:
    """The OS process of the local RabbitMQ node, for its CPU time (None if unknown)."""
    try:
        return int(rabbitmqctl("eval", "os:getpid().").strip().strip('"'))
    except (RuntimeError, ValueError, OSError):
        return None


async def phase(work: Awaitable[int], broker: int | None) -> Phase:
    """Run `work` (returns the messages it moved) and measure it."""
    meter = CpuMeter({"broker": broker})
    started = time.perf_counter()
    count = await work
    rate = count / (time.perf_counter() - started)
    return Phase(rate, meter.per_event_us(count).get("broker"))


async def measure(url: str, label: str, events: int, plan: Plan, broker: int | None) -> Result:
    """The three phases for one message size."""
    body = message_body(events)
    say(f"  {label}: {len(body):,} bytes per message")
    published = 0

    async def publish_all() -> int:
        nonlocal published
        published = await publish(url, body, plan, asyncio.Event())
        return published

    publishing = await phase(publish_all(), broker)
    say(f"    publish: {published:,} confirmed, {publishing.rate:,.0f} messages/s")
    consuming = await phase(consume(url, plan, lambda acked: acked >= published), broker)
    say(f"    consume: {consuming.rate:,.0f} messages/s")
    await purge(url)

    # Both at once: consumers run until the publishers have finished.
    async def both_at_once() -> int:
        stop = asyncio.Event()
        consumer = asyncio.create_task(consume(url, plan, lambda _: False, stop))
        sent = await publish(url, body, plan, asyncio.Event())
        stop.set()
        return min(sent, await consumer)

    both = await phase(both_at_once(), broker)
    say(f"    both: {both.rate:,.0f} messages/s published and consumed")
    await purge(url)
    return Result(label, events, len(body), publishing, consuming, both)


def render(results: list[Result], plan: Plan) -> str:
    """The figures as a Markdown table."""
    lines = [
        f"one quorum queue, {plan.publishers} publishers (window {plan.window}), "
        f"{plan.consumers} consumers (prefetch {plan.prefetch}), at most {plan.count:,} "
        f"single-event messages or {plan.seconds:.0f} s per phase, {os.cpu_count()} CPUs",
        "",
        "| message | bytes | publish msg/s | broker us/msg | consume msg/s | broker us/msg "
        "| both msg/s | broker us/msg | both events/s |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for result in results:
        events_per_second = result.both.rate * result.events_per_message
        lines.append(
            f"| {result.label} | {result.body_bytes:,} | {result.publish.cells()} "
            f"| {result.consume.cells()} | {result.both.cells()} | {events_per_second:,.0f} |"
        )
    return "\n".join(lines)


async def measure_sizes(url: str, plan: Plan, broker: int | None) -> list[Result]:
    """Both message sizes in the vhost of `url`; the bench's queues are deleted afterwards."""
    await declare(url)
    try:
        return [
            await measure(url, "1 event", 1, plan, broker),
            await measure(
                url, f"{EVENTS_PER_GROUP} events", EVENTS_PER_GROUP, _grouped(plan), broker
            ),
        ]
    finally:
        await delete_queues(url)


async def run(base_url: str, plan: Plan, in_vhost: bool) -> str:
    """Measure in a vhost of our own (or in the one of `base_url`); return the table."""
    if in_vhost:  # a node elsewhere: its CPU is not ours to read
        return render(await measure_sizes(base_url, plan, None), plan)
    with rabbit_vhost(base_url) as url:
        return render(await measure_sizes(url, plan, broker_pid()), plan)


def _grouped(plan: Plan) -> Plan:
    # A group is a hundred times the bytes: fewer of them make the same bounded run.
    return Plan(
        plan.publishers,
        plan.consumers,
        max(plan.window // 10, 1),
        max(plan.prefetch // 10, 1),
        max(plan.count // 20, 1),
        plan.seconds,
    )


def main() -> None:
    """Parse the bounds, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("TEST_RABBITMQ_URL", DEFAULT_RABBITMQ_URL),
        help="RabbitMQ node (a vhost is created there with rabbitmqctl, and deleted)",
    )
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument("--prefetch", type=int, default=1000)
    parser.add_argument("--count", type=int, default=100_000, help="messages per phase at most")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per phase at most")
    parser.add_argument(
        "--in-vhost",
        action="store_true",
        help="measure in the vhost of --url instead of creating one (a cluster elsewhere)",
    )
    args = parser.parse_args()
    plan = Plan(
        args.publishers, args.consumers, args.window, args.prefetch, args.count, args.seconds
    )
    say(f"quorum queue ceiling against {args.url}")
    print(asyncio.run(run(args.url, plan, args.in_vhost)))


if __name__ == "__main__":
    main()
