"""The processor's memory while it holds a full prefetch of the largest messages.

RabbitMQ must limit the processor's consumer to PROCESSOR_PREFETCH unacknowledged
messages; with the database down every handler holds its message, so the processor then
has exactly that many in hand however many wait in the queue. Each is a group
message just under the contract's largest message (MAX_MESSAGE_BYTES, 2 MiB); the
processor's resident memory (its peak, VmHWM) must then stay under

    baseline + k * PROCESSOR_PREFETCH * MAX_MESSAGE_BYTES,

the baseline being its resident memory before the messages arrived: k = HOLDING_COST
while it holds them, WRITING_COST until the database is back and every event is stored.
A message in hand costs a multiple of its body: the body, the validated models, the BSON
of its documents; writing adds the driver's command buffers and the messages delivered
as the first ones are acknowledged.
"""

import asyncio
import secrets
import signal
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient

from activity_contract import topology
from activity_contract.events import MAX_METADATA_BYTES, ActivityGroupMessage, ActivityIn
from activity_contract.topology import ACTIVITY_QUEUE, DEAD_LETTER_QUEUE
from activity_testing.events import event_payload
from activity_testing.processes import SecantusServer, ServiceProcess
from activity_testing.rabbitmq import rabbitmqctl, ready_messages, vhost_of

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

Document = dict[str, Any]

MIB = 1024 * 1024
# The contract's largest message, once it names one.
MAX_MESSAGE_BYTES: int = getattr(topology, "MAX_MESSAGE_BYTES", 2 * MIB)
MESSAGE_BYTES = int(1.9 * MIB)
# Messages beyond the prefetch, waiting in the queue (about 61 MiB of them).
WAITING_MESSAGES = 32
# k, measured on this machine (2 cores) with a prefetch of 16 and of 32, baseline 70 MiB:
# holding, 2.85 to 2.95 (RSS 162 and 257 MiB); through the writes, 4.8 to 5.8 (peaks of
# 231 to 257 and 375 to 406 MiB). The bounds leave a third of headroom and more.
HOLDING_COST = 4.0
WRITING_COST = 8.0
PREFIX = "event_tracker_processor"


@pytest.fixture
def own_database(secantus_storage: Path) -> Iterator[SecantusServer]:
    """A SecantusDB server of this test's own, which it stops and starts again."""
    server = SecantusServer(secantus_storage).start()
    yield server
    server.stop()


@pytest.mark.parametrize("prefetch", [16, pytest.param(32, marks=pytest.mark.slow)])
async def test_a_full_prefetch_of_the_largest_messages_stays_within_its_memory_bound(
    prefetch: int,
    own_database: SecantusServer,
    start_processor: Callable[..., ServiceProcess],
    mongo_database: str,
    rabbit_url: str,
    wait_until: Any,
    queue_depth: Any,
) -> None:
    processor = start_processor(
        MONGODB_URL=own_database.url, PROCESSOR_PREFETCH=str(prefetch), LOG_LEVEL="ERROR"
    )
    assert processor.process is not None
    pid = processor.process.pid
    limit = await asyncio.to_thread(_consumer_prefetch, rabbit_url)
    assert limit == prefetch, (
        f"PROCESSOR_PREFETCH={prefetch}, but RabbitMQ limits the processor's consumer to "
        f"{limit or 'no limit'} (0: unlimited) unacknowledged messages"
    )
    await asyncio.to_thread(own_database.stop, signal.SIGTERM)
    baseline = _memory_kib(pid)

    messages = prefetch + WAITING_MESSAGES
    events = await _publish_large_groups(rabbit_url, messages)
    # Every handler holds its message (nothing can be written); the queue keeps the rest.
    assert await wait_until(lambda: _consumed_at_least(processor, prefetch), within=60)
    assert await wait_until(lambda: _ready_is(rabbit_url, messages - prefetch), within=30)
    assert await _samples(processor, f"{PREFIX}_messages_consumed_total") == prefetch

    held = _memory_kib(pid)
    assert held["VmHWM"] <= _bound_kib(baseline, HOLDING_COST, prefetch), _memory_report(
        "holding the prefetch", prefetch, baseline, held
    )

    await asyncio.to_thread(own_database.start)
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(own_database.url)
    try:
        activities = mongo[mongo_database]["activities"]

        async def all_stored() -> bool:
            return await activities.count_documents({}) == events

        assert await wait_until(all_stored, within=240)
        assert await wait_until(lambda: _ready_is(rabbit_url, 0), within=60)
        assert await wait_until(lambda: _equals(queue_depth(), 0), within=60)
        assert await queue_depth(DEAD_LETTER_QUEUE) == 0
        assert await activities.count_documents({}) == events
    finally:
        await mongo.close()
    written = _memory_kib(pid)
    assert written["VmHWM"] <= _bound_kib(baseline, WRITING_COST, prefetch), _memory_report(
        "through the writes", prefetch, baseline, written
    )


def _bound_kib(baseline: dict[str, int], cost: float, prefetch: int) -> float:
    return baseline["VmRSS"] + cost * prefetch * MAX_MESSAGE_BYTES / 1024


def _memory_report(when: str, prefetch: int, baseline: dict[str, int], now: dict[str, int]) -> str:
    """The numbers a bound is documented from: RSS in MiB, and the k they give."""
    in_hand_kib = prefetch * MAX_MESSAGE_BYTES / 1024
    return (
        f"PROCESSOR_PREFETCH={prefetch}, {when}: RSS {baseline['VmRSS'] / 1024:.0f} MiB "
        f"before, {now['VmRSS'] / 1024:.0f} MiB now, peak {now['VmHWM'] / 1024:.0f} MiB; "
        f"k = {(now['VmHWM'] - baseline['VmRSS']) / in_hand_kib:.2f}"
    )


def _group_body(events_per_message: int, metadata_chars: int) -> bytes:
    received_at = datetime.now(UTC)
    group = ActivityGroupMessage(
        group_id=uuid.uuid4(),
        events=[
            ActivityIn.model_validate(
                event_payload(
                    user_id=f"memory-user-{i % 7}",
                    metadata={"blob": secrets.token_hex(metadata_chars // 2)},
                )
            ).to_message(received_at)
            for i in range(events_per_message)
        ],
    )
    return group.model_dump_json().encode()


async def _publish_large_groups(rabbit_url: str, messages: int) -> int:
    """Publish `messages` group messages of at most MESSAGE_BYTES each; return the events."""
    metadata_chars = MAX_METADATA_BYTES - 64  # the whole object stays under the limit
    one_event = len(_group_body(1, metadata_chars))
    events_per_message = MESSAGE_BYTES // one_event
    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        channel = await connection.channel()  # with publisher confirms
        for _ in range(messages):
            body = _group_body(events_per_message, metadata_chars)
            assert 0.95 * MESSAGE_BYTES < len(body) <= MESSAGE_BYTES
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body,
                    content_type="application/json",
                    message_id=str(uuid.uuid4()),
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=ACTIVITY_QUEUE,
            )
    return messages * events_per_message


def _consumer_prefetch(rabbit_url: str) -> int:
    """How many unacknowledged messages RabbitMQ lets the activity queue's consumer hold.

    The consumer's own limit (`basic.qos` per consumer), else its channel's shared one.
    """
    vhost = vhost_of(rabbit_url)
    consumers = rabbitmqctl(
        "list_consumers", "-p", vhost, "queue_name", "channel_pid", "prefetch_count", "-s"
    )
    channels = rabbitmqctl("list_channels", "pid", "global_prefetch_count", "-s")
    shared = dict(line.split("\t") for line in channels.splitlines() if line)
    [(channel, own)] = [
        (row[1], int(row[2]))
        for line in consumers.splitlines()
        if (row := line.split("\t"))[0] == ACTIVITY_QUEUE
    ]
    return own or int(shared.get(channel, "0"))


def _memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (resident at its peak) of a process, in KiB."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


async def _samples(processor: ServiceProcess, name: str) -> float:
    """A metric sample of the processor, its label sets added up."""
    async with httpx.AsyncClient(base_url=processor.base_url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


async def _consumed_at_least(processor: ServiceProcess, expected: int) -> bool:
    return await _samples(processor, f"{PREFIX}_messages_consumed_total") >= expected


async def _ready_is(rabbit_url: str, expected: int) -> bool:
    return await ready_messages(rabbit_url, ACTIVITY_QUEUE) == expected


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)
