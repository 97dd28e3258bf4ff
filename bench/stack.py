"""The parts a benchmark run starts and always stops: vhost, database, services, loadgen."""

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
from pymongo import AsyncMongoClient, MongoClient

from activity_contract.testing import (
    DEFAULT_RABBITMQ_URL,
    SecantusServer,
    ServiceProcess,
    free_port,
    rabbit_vhost,
)
from activity_contract.topology import ACTIVITY_QUEUE

# Far above anything one machine can offer, so the limiter never answers 429 here.
UNLIMITED_RATE = "1000000/second"
# One ingest worker per core unless INGEST_WORKERS says otherwise: the production setting
# for a machine whose cores ingest may use (one worker is bound to one core).
INGEST_WORKERS = os.environ.get("INGEST_WORKERS") or str(os.cpu_count() or 1)


def say(line: str) -> None:
    """A progress line."""
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Stack:
    """Where the benchmark's own broker vhost and database are."""

    rabbitmq_url: str
    mongodb_url: str
    database: str
    database_pid: int | None = None  # our own SecantusDB, for its CPU time

    def service_env(self) -> dict[str, str]:
        """Environment for both services (added to this process's environment)."""
        return {
            "RABBITMQ_URL": self.rabbitmq_url,
            "MONGODB_URL": self.mongodb_url,
            "MONGODB_DATABASE": self.database,
            "INGEST_HOST": "127.0.0.1",
            "PROCESSOR_HOST": "127.0.0.1",
            "RATE_LIMIT": UNLIMITED_RATE,
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
        }

    def ingest(self) -> ServiceProcess:
        """The ingest service on a free loopback port (not started)."""
        port = free_port()
        env = {**self.service_env(), "INGEST_PORT": str(port), "INGEST_WORKERS": INGEST_WORKERS}
        return ServiceProcess("ingest", env, port)

    def processor(self) -> ServiceProcess:
        """The processor on a free loopback port (not started)."""
        port = free_port()
        env = {**self.service_env(), "PROCESSOR_PORT": str(port)}
        return ServiceProcess("processor", env, port)

    def mongo(self) -> AsyncMongoClient[dict[str, Any]]:
        """A client for the benchmark's database server."""
        return AsyncMongoClient(self.mongodb_url, tz_aware=True, uuidRepresentation="standard")


@contextlib.contextmanager
def bench_stack() -> Iterator[Stack]:
    """Own vhost (deleted at the end), own SecantusDB unless MONGODB_URL is set, own database."""
    base_url = os.environ.get("RABBITMQ_URL", DEFAULT_RABBITMQ_URL)
    database = f"event_tracker_bench_{uuid.uuid4().hex[:8]}"
    with rabbit_vhost(base_url) as rabbitmq_url, contextlib.ExitStack() as stack:
        mongodb_url = os.environ.get("MONGODB_URL", "")
        database_pid = None
        if not mongodb_url:
            storage = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-db-")))
            server = stack.enter_context(SecantusServer(storage / "secantus"))
            mongodb_url = server.url
            database_pid = server.process.pid if server.process else None
            say(f"  SecantusDB started at {mongodb_url}")
        else:
            stack.callback(_drop_database, mongodb_url, database)
        say(f"  RabbitMQ vhost {rabbitmq_url.rsplit('/', 1)[-1]}, database {database}")
        yield Stack(rabbitmq_url, mongodb_url, database, database_pid)


def _drop_database(url: str, database: str) -> None:
    client: MongoClient[dict[str, Any]]
    with MongoClient(url) as client:
        client.drop_database(database)


@contextlib.contextmanager
def running(service: ServiceProcess) -> Iterator[ServiceProcess]:
    """Start a service and stop it (SIGTERM) whatever happens."""
    try:
        yield service.start()
    finally:
        service.stop()


def loadgen(port: int, label: str, **options: float | int | str) -> dict[str, Any]:
    """Run the load generator in its own process and return its summary."""
    command = [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--label", label]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    say(f"  {label}: {' '.join(command[3:])}")
    result = subprocess.run(  # noqa: S603 - our own module with our own arguments
        command, stdout=subprocess.PIPE, check=True, cwd=Path(__file__).resolve().parent.parent
    )
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def cpu_seconds(pid: int | None) -> float | None:
    """User plus system CPU time of a process and its direct children (Linux only)."""
    if pid is None:
        return None
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        total = 0.0
        for each in [pid, *map(int, children)]:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return total


class CpuMeter:
    """CPU time one process (with its workers) spends over a phase, per event."""

    def __init__(self, pid: int | None) -> None:
        """Start counting for `pid` (None: not measurable)."""
        self.pid = pid
        self.start = cpu_seconds(pid)

    def per_event_us(self, events: int) -> float | None:
        """Microseconds of CPU per event since start (None if unknown)."""
        end = cpu_seconds(self.pid)
        if self.start is None or end is None or events <= 0:
            return None
        return (end - self.start) / events * 1e6


async def queue_depth(rabbitmq_url: str) -> int:
    """Messages ready in the activity queue (passive declare: no side effects)."""
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(ACTIVITY_QUEUE, passive=True)
        count = queue.declaration_result.message_count
        return int(count or 0)


async def wait_stored(
    stack: Stack, expected: int, within: float, label: str, interval: float = 0.1
) -> tuple[int, float, list[tuple[float, int]]]:
    """Poll the stored count until `expected` or `within` s.

    Returns the last count, the seconds waited and (wall-clock time, count) samples.
    """
    import asyncio

    client: AsyncMongoClient[dict[str, Any]] = stack.mongo()
    collection = client[stack.database]["activities"]
    samples: list[tuple[float, int]] = []
    started = time.perf_counter()
    last_said = started
    count = 0
    try:
        while True:
            count = await collection.estimated_document_count()
            now = time.perf_counter()
            samples.append((time.time(), count))
            if count >= expected or now - started > within:
                break
            if now - last_said >= 5:
                say(f"    {label}: {count:,} of {expected:,} stored after {now - started:.0f} s")
                last_said = now
            await asyncio.sleep(interval)
    finally:
        await client.close()
    return count, time.perf_counter() - started, samples
