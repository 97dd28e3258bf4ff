"""The HTTP edge's connection guard (`GuardedProtocol`), served by a real uvicorn in-process.

A small echo app stands in for ingest: the guard acts below any app. Deadlines are short
(`DEADLINE`), and each is checked from both sides: not before it, and not long after.
"""

import asyncio
import contextlib
import functools
import logging
import pickle
import resource
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from activity_testing.processes import free_port
from activity_testing.waiting import wait_until
from ingest.http.connections import (
    BODY_RECEIVED,
    CONNECTION_CLOSURES,
    ConnectionClosures,
    ConnectionLimits,
    GuardedProtocol,
)
from ingest.http.file_limits import fit_connection_cap
from ingest.http.metrics import CLOSURE_REASONS, ConnectionMetrics

DEADLINE = 0.5
# How late a deadline may be met on a loaded machine.
SLACK = 3.0
LIMITS = ConnectionLimits(
    max_header_bytes=2048,
    max_headers=20,
    header_timeout_seconds=DEADLINE,
    body_timeout_seconds=DEADLINE,
    max_connections=50,
)
HEAD = b"GET / HTTP/1.1\r\nHost: test\r\n"


@dataclass
class Served:
    """A guarded server on `port`: its closures' registry and what its app saw."""

    port: int
    registry: CollectorRegistry
    disconnects: list[str] = field(default_factory=list)
    server: uvicorn.Server | None = None

    def open_connections(self) -> int:
        """Connections the server holds right now."""
        assert self.server is not None
        return len(self.server.server_state.connections)

    def closed(self, reason: str) -> float:
        """Connections closed for `reason` so far."""
        value = self.registry.get_sample_value(
            "event_tracker_ingest_connections_closed_total", {"reason": reason}
        )
        return value or 0.0

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A new connection to the server."""
        return await asyncio.open_connection("127.0.0.1", self.port)


def echo_app(served: Served) -> Callable[[Scope, Receive, Send], object]:
    """Answer 200 with the body's length; publish the closures as ingest's lifespan does.

    `X-Body-Received` says whether the server held the whole body when the app began, and
    `/two-parts` answers its body in two parts.
    """
    closures = ConnectionClosures(ConnectionMetrics(served.registry))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                scope["state"][CONNECTION_CLOSURES] = closures
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        whole = b"1" if scope.get(BODY_RECEIVED) else b"0"
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                served.disconnects.append(scope["path"])
                return
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = str(size).encode()
        headers = [(b"content-length", str(len(body)).encode()), (b"x-body-received", whole)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if scope["path"] == "/two-parts":
            await send({"type": "http.response.body", "body": body[:1], "more_body": True})
            body = body[1:]
        await send({"type": "http.response.body", "body": body})

    return app


ServeGuarded = Callable[..., AbstractAsyncContextManager[Served]]


class _RecordedTransport:
    """A connection's transport, its writes recorded (everything else is the transport's)."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class RecordingProtocol(GuardedProtocol):
    """`GuardedProtocol` whose transport records each write in `WRITES`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_RecordedTransport(transport, WRITES))  # type: ignore[arg-type]


WRITES: list[bytes] = []


@pytest.fixture
def serve_guarded() -> ServeGuarded:
    """Serve the echo app through `GuardedProtocol` held to `LIMITS` (keywords replace some).

    `protocol=` serves through a subclass of it instead.
    """

    @asynccontextmanager
    async def serve(
        protocol: type[GuardedProtocol] = GuardedProtocol, **changes: Any
    ) -> AsyncIterator[Served]:
        served = Served(free_port(), CollectorRegistry())
        config = uvicorn.Config(
            echo_app(served),
            port=served.port,
            log_config=None,
            lifespan="on",
            timeout_keep_alive=30,
            http=functools.partial(protocol, limits=replace(LIMITS, **changes)),  # type: ignore[arg-type]
        )
        server = served.server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        assert await wait_until(lambda: server.started, 10, interval=0.01), "no server"
        try:
            yield served
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, 10)

    return serve


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the next answer on the connection."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {
        name.lower(): value.strip()
        for name, _, value in (line.partition(":") for line in head[1:] if line)
    }
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(head[0].split()[1]), headers, body


async def rest_until_closed(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Everything left until the server closes the connection, and how long that took."""
    started = time.monotonic()
    try:
        rest = await asyncio.wait_for(reader.read(), DEADLINE + SLACK)
    except ConnectionError:  # reset: the server closed with bytes of ours unread
        rest = b""
    return rest, time.monotonic() - started


def request_of_size(size: int) -> bytes:
    """A GET whose request line and headers are exactly `size` bytes."""
    padding = size - len(HEAD) - len(b"X-Pad: \r\n\r\n")
    return HEAD + b"X-Pad: " + b"p" * padding + b"\r\n\r\n"


# --- Header bytes and fields -------------------------------------------------------------


async def test_headers_up_to_the_bound_pass_and_one_byte_more_is_431(
    serve_guarded: ServeGuarded,
) -> None:
    async with serve_guarded() as served:
        reader, writer = await served.connect()
        writer.write(request_of_size(LIMITS.max_header_bytes))
        assert (await answer(reader))[0] == 200
        writer.write(request_of_size(LIMITS.max_header_bytes + 1))  # on the same connection
        status, headers, body = await answer(reader)
        assert (status, headers["connection"]) == (431, "close")
        assert headers["content-type"].startswith("text/plain")
        assert body == b"The request line and headers are larger than 2048 bytes."
        assert await reader.read() == b""
        assert served.closed("headers_too_large") == 1


async def test_headers_that_never_end_are_refused_as_they_pass_the_bound(
    serve_guarded: ServeGuarded,
) -> None:
    async with serve_guarded(header_timeout_seconds=30) as served:
        reader, writer = await served.connect()
        endless = request_of_size(4 * LIMITS.max_header_bytes)[:-4]  # no end of headers
        answered = asyncio.create_task(reader.readuntil(b"\r\n\r\n"))
        sent = 0
        with contextlib.suppress(ConnectionError):
            while sent < len(endless) and not answered.done():
                writer.write(endless[sent : sent + 16])
                await writer.drain()
                sent += 16
                await asyncio.sleep(0.002)  # pacing: the server reads the head as it grows
        head = await asyncio.wait_for(answered, SLACK)
        assert head.startswith(b"HTTP/1.1 431 ")
        assert sent < len(endless)
        assert served.closed("headers_too_large") == 1


async def test_a_body_in_the_same_read_as_its_headers_is_not_counted_as_headers(
    serve_guarded: ServeGuarded,
) -> None:
    async with serve_guarded() as served:
        reader, writer = await served.connect()
        body = b"b" * (8 * LIMITS.max_header_bytes)
        head = b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n" % len(body)
        padding = LIMITS.max_header_bytes - len(head) - len(b"X-Pad: \r\n\r\n")
        writer.write(head + b"X-Pad: " + b"p" * padding + b"\r\n\r\n" + body)
        status, _, echoed = await answer(reader)
        assert (status, echoed) == (200, b"16384")
        assert served.closed("headers_too_large") == 0


async def test_pipelined_requests_in_one_read_past_the_bound_are_all_answered(
    serve_guarded: ServeGuarded,
) -> None:
    async with serve_guarded() as served:
        reader, writer = await served.connect()
        half = request_of_size(LIMITS.max_header_bytes // 2 + 100)
        writer.write(half * 5)  # 5 requests, 2.5 times the bound in one write
        statuses = [(await answer(reader))[0] for _ in range(5)]
        assert statuses == [200] * 5
        assert served.closed("headers_too_large") == 0


async def test_header_fields_up_to_the_bound_pass_and_one_more_is_431(
    serve_guarded: ServeGuarded,
) -> None:
    async with serve_guarded() as served:
        reader, writer = await served.connect()
        fields = b"".join(b"X-F%d: v\r\n" % i for i in range(LIMITS.max_headers - 1))
        writer.write(HEAD + fields + b"\r\n")  # Host and these: exactly the bound
        assert (await answer(reader))[0] == 200
        writer.write(HEAD + fields + b"X-One-More: v\r\n\r\n")
        status, headers, body = await answer(reader)
        assert (status, headers["connection"]) == (431, "close")
        assert body == b"The request has more than 20 header fields."
        assert await reader.read() == b""
        assert served.closed("too_many_headers") == 1


async def test_ten_thousand_header_lines_are_refused_at_the_bound(
    serve_guarded: ServeGuarded,
) -> None:
    async with serve_guarded(max_header_bytes=1024 * 1024) as served:
        reader, writer = await served.connect()
        writer.write(HEAD + b"".join(b"X-L%d: v\r\n" % i for i in range(10_000)) + b"\r\n")
        rest, _ = await rest_until_closed(reader)
        assert rest == b"" or rest.startswith(b"HTTP/1.1 431 ")
        assert served.closed("too_many_headers") == 1


async def test_expect_100_continue_is_still_honoured(serve_guarded: ServeGuarded) -> None:
    async with serve_guarded() as served:
        reader, writer = await served.connect()
        writer.write(
            b"POST / HTTP/1.1\r\nHost: test\r\nEXPECT: 100-Continue\r\nContent-Length: 3\r\n\r\n"
        )
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"abc")
        status, _, body = await answer(reader)
        assert (status, body) == (200, b"3")


# --- Writes -----------------------------------------------------------------------------


async def test_a_response_head_leaves_with_its_body_in_one_write(
    serve_guarded: ServeGuarded,
) -> None:
    """One write (one packet) per small response; a later part of a body is its own write."""
    WRITES.clear()
    async with serve_guarded(protocol=RecordingProtocol) as served:
        reader, writer = await served.connect()
        writer.write(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 12\r\n\r\n" + b"x" * 12)
        assert (await answer(reader))[::2] == (200, b"12")
        assert len(WRITES) == 1, WRITES
        assert WRITES[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert WRITES[0].endswith(b"\r\n\r\n12")

        writer.write(b"POST /two-parts HTTP/1.1\r\nHost: test\r\nContent-Length: 12\r\n\r\n")
        writer.write(b"x" * 12)
        assert (await answer(reader))[::2] == (200, b"12")
        assert len(WRITES) == 3, WRITES
        assert WRITES[1].startswith(b"HTTP/1.1 200 OK\r\n")
        assert WRITES[1].endswith(b"\r\n\r\n1")
        assert WRITES[2] == b"2"


async def test_the_scope_says_whether_the_body_was_whole_before_the_app_began(
    serve_guarded: ServeGuarded,
) -> None:
    """The write routes skip their body deadline only for a body already in hand."""
    async with serve_guarded() as served:
        reader, writer = await served.connect()
        writer.write(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc")
        status, headers, _ = await answer(reader)
        assert (status, headers["x-body-received"]) == (200, "1")
        # `100 Continue` is sent when the app first asks for the body: it has begun by then.
        writer.write(
            b"POST / HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
        )
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"abc")
        status, headers, body = await answer(reader)
        assert (status, headers["x-body-received"], body) == (200, "0", b"3")


# --- Deadlines ---------------------------------------------------------------------------


async def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(
    serve_guarded: ServeGuarded,
) -> None:
    async with serve_guarded() as served:
        reader, _ = await served.connect()
        rest, seconds = await rest_until_closed(reader)
        assert rest == b""  # nothing was asked: nothing is answered
        assert DEADLINE * 0.9 <= seconds <= DEADLINE + SLACK
        assert served.closed("header_timeout") == 1


async def test_headers_that_trickle_are_408_at_the_header_deadline(
    serve_guarded: ServeGuarded,
) -> None:
    async with serve_guarded() as served:
        reader, writer = await served.connect()
        started = time.monotonic()
        writer.write(HEAD)

        async def trickle() -> None:
            while True:  # one header byte every 50 ms, never the end
                await asyncio.sleep(0.05)
                writer.write(b"x")

        trickling = asyncio.create_task(trickle())
        try:
            rest = await asyncio.wait_for(reader.read(), DEADLINE + SLACK)
        finally:
            trickling.cancel()
        assert rest.startswith(b"HTTP/1.1 408 ")
        assert b"connection: close\r\n" in rest
        assert DEADLINE * 0.9 <= time.monotonic() - started <= DEADLINE + SLACK
        assert served.closed("header_timeout") == 1


async def test_a_kept_alive_connection_may_idle_and_its_next_request_has_its_own_deadline(
    serve_guarded: ServeGuarded,
) -> None:
    async with serve_guarded() as served:
        reader, writer = await served.connect()
        writer.write(HEAD + b"\r\n")
        assert (await answer(reader))[0] == 200
        await asyncio.sleep(3 * DEADLINE)  # idle between requests: keep-alive's, not ours
        writer.write(HEAD + b"\r\n")
        assert (await answer(reader))[0] == 200
        started = time.monotonic()
        writer.write(HEAD)  # a next request that never ends its headers
        rest = await asyncio.wait_for(reader.read(), DEADLINE + SLACK)
        assert rest.startswith(b"HTTP/1.1 408 ")
        assert DEADLINE * 0.9 <= time.monotonic() - started <= DEADLINE + SLACK
        assert served.closed("header_timeout") == 1


async def test_a_body_that_trickles_is_closed_at_the_body_deadline(
    serve_guarded: ServeGuarded,
) -> None:
    async with serve_guarded() as served:
        reader, writer = await served.connect()
        writer.write(b"POST /slow HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n")
        started = time.monotonic()

        async def trickle() -> None:
            while True:
                await asyncio.sleep(0.05)
                writer.write(b"b")

        trickling = asyncio.create_task(trickle())
        try:
            rest = await asyncio.wait_for(reader.read(), DEADLINE + SLACK)
        finally:
            trickling.cancel()
        assert rest == b""  # the app was reading: no answer is written under it
        assert DEADLINE * 0.9 <= time.monotonic() - started <= DEADLINE + SLACK
        assert await wait_until(lambda: served.disconnects == ["/slow"], 5)
        assert served.closed("body_timeout") == 1


async def test_deadlines_end_with_their_request(serve_guarded: ServeGuarded) -> None:
    async with serve_guarded() as served:
        reader, writer = await served.connect()
        writer.write(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n\r\nab")
        await asyncio.sleep(DEADLINE / 4)
        writer.write(b"cd")  # the body's deadline was armed, and ends with it
        assert (await answer(reader))[2] == b"4"
        await asyncio.sleep(3 * DEADLINE)
        writer.write(HEAD + b"\r\n")  # still open
        assert (await answer(reader))[0] == 200
        assert all(served.closed(reason) == 0 for reason in CLOSURE_REASONS)


# --- Connection cap ----------------------------------------------------------------------


async def test_connections_over_the_cap_are_closed_at_once(serve_guarded: ServeGuarded) -> None:
    async with serve_guarded(max_connections=3, header_timeout_seconds=30) as served:
        held = [await served.connect() for _ in range(3)]
        reader, _ = await served.connect()
        rest, seconds = await rest_until_closed(reader)
        assert (rest, served.closed("over_capacity")) == (b"", 1)
        assert seconds < SLACK
        held[0][1].close()  # a place frees up
        assert await wait_until(lambda: served.open_connections() == 2, 5, interval=0.01)
        reader, writer = await served.connect()
        writer.write(HEAD + b"\r\n")
        assert (await answer(reader))[0] == 200
        for _, writer in held[1:]:
            writer.write(HEAD + b"\r\n")
        for reader, _ in held[1:]:
            assert (await answer(reader))[0] == 200


# --- Counting, logging, start-up --------------------------------------------------------


def test_closures_are_counted_each_and_logged_aggregated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    closures = ConnectionClosures(ConnectionMetrics(registry), interval=3600)
    with caplog.at_level(logging.INFO, logger="ingest.http.connections"):
        for reason in ("header_timeout", "header_timeout", "over_capacity", "body_timeout"):
            closures.record(reason)
    [line] = caplog.records  # the first at once; the others wait for the interval's end
    assert (line.levelno, line.getMessage(), line.exc_info) == (
        logging.INFO,
        "connections closed",
        None,
    )
    assert line.__dict__["header_timeout"] == 1
    counted = {
        reason: registry.get_sample_value(
            "event_tracker_ingest_connections_closed_total", {"reason": reason}
        )
        for reason in CLOSURE_REASONS
    }
    assert counted == {
        "header_timeout": 2,
        "body_timeout": 1,
        "headers_too_large": 0,
        "too_many_headers": 0,
        "over_capacity": 1,
    }


def test_the_protocol_pickles_with_its_limits_for_worker_processes() -> None:
    protocol = functools.partial(GuardedProtocol, limits=LIMITS)
    copy = pickle.loads(pickle.dumps(protocol))  # noqa: S301 - our own bytes
    assert (copy.func, copy.keywords) == (GuardedProtocol, {"limits": LIMITS})


class FakeLimits:
    """RLIMIT_NOFILE as `resource` would report and set it."""

    def __init__(self, soft: int, hard: int, *, refuse: bool = False) -> None:
        self.soft, self.hard, self.refuse = soft, hard, refuse

    def getrlimit(self, _: int) -> tuple[int, int]:
        return self.soft, self.hard

    def setrlimit(self, _: int, limits: tuple[int, int]) -> None:
        if self.refuse:
            raise ValueError("not allowed")
        self.soft, self.hard = limits


@pytest.mark.parametrize(
    ("soft", "hard", "refuse", "cap", "soft_after"),
    [
        (1024, 1_048_576, False, 4096, 4096 + 256),  # raised as far as needed
        (1024, 2048, False, 2048 - 256, 2048),  # raised to the hard limit, cap lowered
        (1024, 1_048_576, True, 1024 - 256, 1024),  # not allowed to raise: cap lowered
        (100_000, 100_000, False, 4096, 100_000),  # already enough: untouched
        (300, 300, False, 150, 300),  # a tiny limit: half of it for connections
        (resource.RLIM_INFINITY, resource.RLIM_INFINITY, False, 4096, resource.RLIM_INFINITY),
    ],
)
def test_the_cap_fits_the_open_file_limit(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    soft: int,
    hard: int,
    refuse: bool,
    cap: int,
    soft_after: int,
) -> None:
    fake = FakeLimits(soft, hard, refuse=refuse)
    monkeypatch.setattr(resource, "getrlimit", fake.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", fake.setrlimit)
    with caplog.at_level(logging.WARNING, logger="ingest.http.file_limits"):
        assert fit_connection_cap(4096) == cap
    assert fake.soft == soft_after
    lowered = [r for r in caplog.records if "lowered" in r.getMessage()]
    assert len(lowered) == (cap < 4096)
