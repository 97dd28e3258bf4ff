"""HTTP load generator, run as its own process: `python -m bench.loadgen --help`.

Raw HTTP/1.1 keep-alive connections on uvloop with httptools' response parser, so one
process can offer several thousand requests per second with little CPU. Two modes:

- closed loop (`--concurrency N`): N connections each send the next request as soon as
  the previous answer arrived; gives the maximum rate the server sustains.
- open loop (`--rate R`): requests are due at fixed times whether or not earlier ones were
  answered; latency is measured from the due time, so back-pressure cannot hide queueing
  (no coordinated omission).

Requests are single-event POSTs, batch POSTs (`--batch N`) or timeline reads
(`--read-prefix P --read-users N --api-key K`: GET /api/v1/users/{P}{i}/activities?limit=50).
`--source 127.0.0.2` binds every connection to that loopback address, so two load
generators look like two clients to a per-IP rate limit (Linux routes all of 127.0.0.0/8).

Prints one JSON object with counts and exact latency percentiles on stdout, and progress
lines on stderr.
"""

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httptools
import uvloop

PROGRESS_EVERY_SECONDS = 5.0
MAX_OPEN_LOOP_CONNECTIONS = 1024
MAX_GRACE_SECONDS = 30.0  # open loop: answers awaited after the last request was due


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(error)

    def on_message_complete(self) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionError("connection closed"))

    def _fail(self, error: BaseException) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(error)

    async def request(self, raw: bytes) -> int:
        """Send one request and return its status code."""
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.answer


@dataclass
class Results:
    """What happened to the requests sent."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    errors: int = 0

    def record(self, status: int, latency: float) -> None:
        self.latencies.append(latency)
        key = str(status)
        self.statuses[key] = self.statuses.get(key, 0) + 1


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of already sorted values (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(share * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def build_requests(args: argparse.Namespace) -> list[bytes]:
    """A few distinct raw requests to cycle through (the server assigns each event id)."""
    host = f"Host: {args.host}:{args.port}\r\n"
    if args.read_prefix:
        auth = f"Authorization: Bearer {args.api_key}\r\n" if args.api_key else ""
        return [
            (
                f"GET /api/v1/users/{args.read_prefix}{user}/activities?limit={args.page_size} "
                f"HTTP/1.1\r\n{host}{auth}\r\n"
            ).encode()
            for user in range(args.read_users)
        ]
    requests = []
    for variant in range(16):
        event = {
            "user_id": f"bench-user-{variant}",
            "event_type": args.event_type,
            "metadata": {"path": f"/page/{variant}", "referrer": "bench", "n": variant},
        }
        if args.batch > 1:
            path = "/api/v1/activities/batch"
            body = json.dumps({"events": [event] * args.batch}).encode()
        else:
            path = "/api/v1/activities"
            body = json.dumps(event).encode()
        head = (
            f"POST {path} HTTP/1.1\r\n{host}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


async def connect(args: argparse.Namespace) -> Connection:
    """Open one connection (from `--source` when given)."""
    local = (args.source, 0) if args.source else None
    _, connection = await asyncio.get_running_loop().create_connection(
        Connection, args.host, args.port, local_addr=local
    )
    return connection


async def progress(label: str, results: Results, started: float) -> None:
    """Print a progress line every few seconds."""
    while True:
        await asyncio.sleep(PROGRESS_EVERY_SECONDS)
        elapsed = time.perf_counter() - started
        done = len(results.latencies)
        print(
            f"    {label}: {elapsed:5.1f} s, {done:,} answered, {done / elapsed:,.0f} req/s",
            file=sys.stderr,
            flush=True,
        )


async def closed_loop(args: argparse.Namespace, results: Results) -> float:
    """N connections, each sending back to back until the deadline; return elapsed time."""
    requests = build_requests(args)
    connections = [await connect(args) for _ in range(args.concurrency)]
    started = time.perf_counter()
    deadline = started + args.duration
    limit = args.max_requests or sys.maxsize

    async def worker(index: int, connection: Connection) -> None:
        sent = 0
        while time.perf_counter() < deadline and results.sent < limit:
            results.sent += 1
            raw = requests[(index + sent) % len(requests)]
            sent += 1
            begin = time.perf_counter()
            try:
                status = await connection.request(raw)
            except (OSError, httptools.HttpParserError):
                results.errors += 1
                if connection.closed:
                    connection = await connect(args)
                continue
            results.record(status, time.perf_counter() - begin)

    reporter = asyncio.create_task(progress(args.label, results, started))
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(connections)))
    elapsed = time.perf_counter() - started
    reporter.cancel()
    for connection in connections:
        if connection.transport is not None:
            connection.transport.close()
    return elapsed


async def open_loop(args: argparse.Namespace, results: Results) -> float:
    """Requests due at a fixed rate; latency counted from each one's due time."""
    requests = build_requests(args)
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(args.concurrency):
        idle.put_nowait(await connect(args))
    opened = args.concurrency
    total = int(args.rate * args.duration)
    in_flight: set[asyncio.Task[None]] = set()

    async def one(index: int, due: float) -> None:
        nonlocal opened
        if idle.empty() and opened < MAX_OPEN_LOOP_CONNECTIONS:
            opened += 1
            connection = await connect(args)
        else:
            connection = await idle.get()
        try:
            status = await connection.request(requests[index % len(requests)])
        except (OSError, httptools.HttpParserError):
            results.errors += 1
            if not connection.closed:
                idle.put_nowait(connection)
            else:
                opened -= 1
            return
        results.record(status, time.perf_counter() - due)
        idle.put_nowait(connection)

    started = time.perf_counter()
    reporter = asyncio.create_task(progress(args.label, results, started))
    for index in range(total):
        due = started + index / args.rate
        delay = due - time.perf_counter()
        if delay > 0.001:
            await asyncio.sleep(delay)
        results.sent += 1
        task = asyncio.create_task(one(index, due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    # Bounded: what is not answered by then counts as an error (the server fell behind).
    deadline = started + args.duration + min(args.duration, MAX_GRACE_SECONDS) + 10
    while in_flight and time.perf_counter() < deadline:
        await asyncio.wait(in_flight, timeout=deadline - time.perf_counter())
    for task in list(in_flight):
        task.cancel()
        results.errors += 1
    elapsed = time.perf_counter() - started
    reporter.cancel()
    while not idle.empty():
        connection = idle.get_nowait()
        if connection.transport is not None:
            connection.transport.close()
    return elapsed


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen mode and summarise."""
    results = Results()
    if args.rate:
        elapsed = await open_loop(args, results)
    else:
        elapsed = await closed_loop(args, results)
    ended_at = time.time()
    latencies = sorted(results.latencies)
    # 2xx: 202 for ingest, 200 for reads.
    accepted = sum(n for status, n in results.statuses.items() if status.startswith("2"))
    answered = len(latencies)
    return {
        "mode": "open" if args.rate else "closed",
        "sent": results.sent,
        "answered": answered,
        "accepted_requests": accepted,
        "accepted_events": accepted * args.batch,
        "refused": results.statuses.get("429", 0),
        "non_2xx_share": (answered - accepted + results.errors) / max(1, results.sent),
        "statuses": results.statuses,
        "errors": results.errors,
        "elapsed": elapsed,
        "ended_at": ended_at,
        "requests_per_second": answered / elapsed if elapsed else 0.0,
        "events_per_second": accepted * args.batch / elapsed if elapsed else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": (latencies[-1] if latencies else 0.0) * 1000,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--concurrency", type=int, default=32, help="connections")
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s: open loop")
    parser.add_argument("--batch", type=int, default=1, help="events per request")
    parser.add_argument("--max-requests", type=int, default=0, help="closed loop: stop after")
    parser.add_argument("--event-type", default="bench_load")
    parser.add_argument("--label", default="load")
    parser.add_argument("--source", default="", help="local loopback address to connect from")
    parser.add_argument("--read-prefix", default="", help="GET timelines of users PREFIX<i>")
    parser.add_argument("--read-users", type=int, default=100, help="users to cycle through")
    parser.add_argument("--page-size", type=int, default=50, help="`limit` of each read")
    parser.add_argument("--api-key", default="", help="bearer key of the reads")
    return parser.parse_args(argv)


def main() -> None:
    """Entry point."""
    args = parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("loadgen: refusing a non-loopback target")
    if args.source and not args.source.startswith("127."):
        sys.exit("loadgen: --source must be a loopback address (127.0.0.0/8)")
    print(json.dumps(uvloop.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
