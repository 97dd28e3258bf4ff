"""Hostile connections against a real ingest process: each ends within its bound.

Ingest runs with 1 s header and body deadlines. Idle sockets, a slowloris, headers that
never end, ten thousand header lines, a 1,000,000-byte header and a body that trickles are
each closed (or answered 431) within their bound, while normal POSTs are answered 202;
every closure is counted by reason, and ingest's resident memory (sampled throughout)
stays flat while tens of MiB of headers are thrown at it. Over the connection cap, a
connection is closed at once.
"""

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from activity_testing.events import event_payload
from activity_testing.processes import ServiceFactory, ServiceProcess
from activity_testing.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

HOST = "127.0.0.1"
DEADLINE = 1.0  # INGEST_HEADER_TIMEOUT_SECONDS and INGEST_BODY_TIMEOUT_SECONDS
SLACK = 4.0  # how late a loaded machine may meet a deadline
MAX_HEADER_BYTES = 32 * 1024  # the default
IDLE_SOCKETS = 200
# Header blocks that never end: this many senders at once, each opening connection after
# connection until this many bytes went out in all.
ENDLESS_SENDERS = 4
ENDLESS_BYTES = 40 * 1024 * 1024
ENDLESS_CHUNK = 64 * 1024
# What one endless connection would send if nothing stopped it (ingest reads 32 KiB of it;
# the rest a connection gets out before the reset fills the two kernels' socket buffers).
ENDLESS_PER_CONNECTION = 16 * 1024 * 1024
RSS_GROWTH_LIMIT = 20 * 1024 * 1024
CAP = 50
CLOSED = "event_tracker_ingest_connections_closed_total"
REQUESTS = "event_tracker_ingest_http_requests_total"
POST = b"POST /api/v1/activities HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n"


@pytest.fixture
def guarded_ingest(ingest_with: ServiceFactory) -> Iterator[ServiceProcess]:
    """Ingest with 1 s deadlines; other limits at their defaults."""
    env = {
        "INGEST_HEADER_TIMEOUT_SECONDS": str(DEADLINE),
        "INGEST_BODY_TIMEOUT_SECONDS": str(DEADLINE),
    }
    with ingest_with(env) as service:
        yield service


def resident_bytes(service: ServiceProcess) -> int:
    """The process's resident memory (VmRSS), in bytes."""
    assert service.pid is not None
    for line in Path(f"/proc/{service.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def closures(service: ServiceProcess) -> dict[str, float]:
    """`event_tracker_ingest_connections_closed_total` by reason."""
    return {labels["reason"]: value for labels, value in await samples(service, CLOSED)}


async def samples(service: ServiceProcess, name: str) -> list[tuple[dict[str, str], float]]:
    """The labels and value of each sample of metric `name`."""
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as http:
        response = await http.get("/metrics")
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == name
    ]


async def post_one(service: ServiceProcess) -> int:
    """Status of one normal POST of an event, on a connection of its own."""
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as http:
        response = await http.post("/api/v1/activities", json=event_payload())
    return response.status_code


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """What the server sent until it closed the connection (a reset ends it too)."""
    received = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            received += chunk
    return received


async def seconds_until_closed(
    reader: asyncio.StreamReader, since: float, within: float = DEADLINE + SLACK
) -> tuple[bytes, float]:
    """What the server sent, and the seconds from `since` until it closed the connection."""
    received = await asyncio.wait_for(until_closed(reader), within + 5)
    return received, time.monotonic() - since


async def drip(writer: asyncio.StreamWriter, byte: bytes, every: float) -> None:
    """Send `byte` every `every` seconds until the connection fails or the task is cancelled."""
    with contextlib.suppress(ConnectionError):
        while not writer.is_closing():
            await asyncio.sleep(every)
            writer.write(byte)
            await writer.drain()


async def test_idle_slow_and_trickling_connections_end_at_their_deadlines_while_posts_pass(
    guarded_ingest: ServiceProcess,
) -> None:
    port = guarded_ingest.port

    # The header deadline runs from the server's accept: read the clock before connecting,
    # since with 200 connections opening at once this loop may resume a connected one late
    # (timed from then, a connection closed on time looked closed early).
    async def idle() -> tuple[bytes, float]:
        started = time.monotonic()
        reader, _ = await asyncio.open_connection(HOST, port)
        return await seconds_until_closed(reader, started)

    async def slowloris() -> tuple[bytes, float]:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(POST + b"X-Slow: ")
        dripping = asyncio.create_task(drip(writer, b"s", 0.2))
        try:
            return await seconds_until_closed(reader, started)
        finally:
            dripping.cancel()

    async def trickling_body() -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(POST + b"Content-Length: 1000\r\n\r\n{")
        started = time.monotonic()
        dripping = asyncio.create_task(drip(writer, b" ", 0.2))
        try:
            return await seconds_until_closed(reader, started)
        finally:
            dripping.cancel()

    hostile = asyncio.gather(*(idle() for _ in range(IDLE_SOCKETS)), slowloris(), trickling_body())
    meanwhile = [await post_one(guarded_ingest) for _ in range(3)]
    *idles, (slow_answer, slow_seconds), (body_answer, body_seconds) = await hostile
    assert meanwhile == [202, 202, 202]

    assert {answer for answer, _ in idles} == {b""}  # nothing asked, nothing answered
    idle_seconds = sorted(seconds for _, seconds in idles)
    assert idle_seconds[0] >= DEADLINE * 0.9, idle_seconds[:5]
    assert idle_seconds[-1] <= DEADLINE + SLACK, idle_seconds[-5:]
    assert slow_answer.startswith(b"HTTP/1.1 408 "), slow_answer[:100]
    assert DEADLINE * 0.9 <= slow_seconds <= DEADLINE + SLACK
    assert body_answer == b""  # the app was reading the body: closed under it, no answer
    assert DEADLINE * 0.9 <= body_seconds <= DEADLINE + SLACK

    assert await post_one(guarded_ingest) == 202
    closed = await closures(guarded_ingest)
    assert closed["header_timeout"] == IDLE_SOCKETS + 1
    assert closed["body_timeout"] == 1
    # The app was reading the trickling body: a hang-up to it (499), not a server error.
    posts = {
        labels["status"]: value
        for labels, value in await samples(guarded_ingest, REQUESTS)
        if labels["handler"] == "/api/v1/activities"
    }
    assert posts == {"202": 4, "499": 1}


async def test_headers_past_their_bounds_are_431_or_closed_and_memory_stays_flat(
    guarded_ingest: ServiceProcess,
) -> None:
    port = guarded_ingest.port
    assert await post_one(guarded_ingest) == 202
    before = peak = resident_bytes(guarded_ingest)
    sent_per_connection: list[int] = []
    answers: list[bytes] = []

    async def endless_connection() -> None:
        """One connection sending a header that never ends, kept open until ingest ends it."""
        reader, writer = await asyncio.open_connection(HOST, port)
        answer = asyncio.create_task(until_closed(reader))
        writer.write(POST + b"X-Endless: ")
        sent = 0
        with contextlib.suppress(ConnectionError):
            while sent < ENDLESS_PER_CONNECTION and not answer.done():
                writer.write(b"e" * ENDLESS_CHUNK)
                await writer.drain()
                sent += ENDLESS_CHUNK
        sent_per_connection.append(sent)
        answers.append(await asyncio.wait_for(answer, DEADLINE + SLACK))
        writer.close()

    async def sender() -> None:
        while sum(sent_per_connection) < ENDLESS_BYTES:
            await endless_connection()

    async def whole_request(head: bytes) -> bytes:
        """Send `head` in one go; the head of the answer, or b"" if closed without one."""
        reader, writer = await asyncio.open_connection(HOST, port)
        with contextlib.suppress(ConnectionError):
            writer.write(head)
            await writer.drain()
        try:
            return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE + SLACK)
        except asyncio.IncompleteReadError as closed:
            return closed.partial
        except ConnectionError:
            return b""
        finally:
            writer.close()

    async def watch_memory() -> None:
        nonlocal peak
        while True:
            peak = max(peak, resident_bytes(guarded_ingest))
            await asyncio.sleep(0.02)  # the sampling interval of the memory peak

    ten_thousand_lines = POST + b"".join(b"X-Line-%05d: v\r\n" % i for i in range(10_000))
    one_megabyte_header = POST + b"X-Big: " + b"b" * 1_000_000 + b"\r\n\r\n"
    watching = asyncio.create_task(watch_memory())
    senders = asyncio.gather(*(sender() for _ in range(ENDLESS_SENDERS)))
    wholes = asyncio.gather(
        whole_request(ten_thousand_lines + b"\r\n"), whole_request(one_megabyte_header)
    )
    meanwhile = await post_one(guarded_ingest)
    lines_answer, big_answer = await wholes
    await senders
    watching.cancel()
    assert meanwhile == 202

    assert sum(sent_per_connection) >= ENDLESS_BYTES
    assert max(sent_per_connection) < ENDLESS_PER_CONNECTION, sent_per_connection
    for answer in [*answers, lines_answer, big_answer]:
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:100]

    endless = len(sent_per_connection)
    closed = await closures(guarded_ingest)
    assert closed["headers_too_large"] == endless + 1, (endless, closed)
    assert closed["too_many_headers"] == 1
    assert closed["header_timeout"] == 0  # the bounds stopped them, not the deadline
    grown = max(peak, resident_bytes(guarded_ingest)) - before
    assert grown < RSS_GROWTH_LIMIT, f"{grown / 2**20:.1f} MiB over {endless} connections"
    assert await post_one(guarded_ingest) == 202


async def test_a_connection_over_the_cap_is_closed_at_once(ingest_with: ServiceFactory) -> None:
    env = {"INGEST_MAX_CONNECTIONS": str(CAP), "INGEST_HEADER_TIMEOUT_SECONDS": "60"}
    with ingest_with(env) as service:
        held = [await asyncio.open_connection(HOST, service.port) for _ in range(CAP)]

        async def over_the_cap() -> tuple[bytes, float]:
            reader, _ = await asyncio.open_connection(HOST, service.port)
            return await seconds_until_closed(reader, time.monotonic())

        refused = await asyncio.gather(*(over_the_cap() for _ in range(10)))
        assert {answer for answer, _ in refused} == {b""}
        assert max(seconds for _, seconds in refused) < SLACK  # not the 60 s deadline
        with pytest.raises(httpx.TransportError):
            await post_one(service)
        for _, writer in held[:5]:
            writer.close()

        async def accepted_again() -> bool:
            with contextlib.suppress(httpx.TransportError):
                return await post_one(service) == 202
            return False

        assert await wait_until(accepted_again, 10)
        closed = await closures(service)
        assert closed["over_capacity"] >= 11  # the 10 and the POST (a retry may add some)
        still_open = [reader for reader, _ in held[5:] if not reader.at_eof()]
        assert len(still_open) == CAP - 5
        for _, writer in held[5:]:
            writer.close()


async def test_worker_processes_are_guarded(ingest_with: ServiceFactory) -> None:
    """With INGEST_WORKERS above 1 the protocol and its limits reach the spawned workers."""
    env = {"INGEST_WORKERS": "2", "INGEST_MAX_HEADERS": "10"}
    with ingest_with(env) as service:
        fields = {f"X-Field-{i}": "v" for i in range(10)}
        statuses: list[int] = []
        for _ in range(12):  # a connection each: the kernel spreads them over the workers
            async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as http:
                statuses.append((await http.get("/health/live", headers=fields)).status_code)
                statuses.append((await http.get("/health/live")).status_code)
        assert statuses.count(431) == 12
        assert statuses.count(200) == 12
