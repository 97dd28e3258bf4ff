"""What a benchmark run starts and always stops, per system under test.

Each system (event-tracker, and the Node baseline when given) gets its own RabbitMQ vhost,
its own throw-away `redis-server`, its own SecantusDB (or its own database on MONGODB_URL)
and its services as child processes on loopback. CPU time is read from /proc.
"""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import PyMongoError

from activity_contract.topology import ACTIVITY_QUEUE
from activity_testing.processes import RedisServer, SecantusServer, ServiceProcess, free_port
from activity_testing.rabbitmq import DEFAULT_RABBITMQ_URL, rabbit_vhost, rabbitmqctl

# Far above anything one machine can offer, so the limiter never answers 429 here.
UNLIMITED_RATE = "1000000/second"
# One ingest worker per core unless INGEST_WORKERS says otherwise: the production setting
# for a machine whose cores ingest may use (one worker is bound to one core).
INGEST_WORKERS = os.environ.get("INGEST_WORKERS") or str(os.cpu_count() or 1)
READ_API_KEY = "bench-read-key"
ROOT = Path(__file__).resolve().parent.parent
# How long the bench waits for a service to answer 200 on /health/ready.
START_TIMEOUT_SECONDS = 60.0
# A processor's /metrics answers in milliseconds; a busy one still within this.
METRICS_TIMEOUT_SECONDS = 5.0
# Bounds on the bench's own database calls (the server may be busy with abandoned reads).
COUNT_TIMEOUT_SECONDS = 60.0
READ_BACK_TIMEOUT_SECONDS = 120.0


def say(line: str) -> None:
    """A progress line (stderr: stdout carries only the table)."""
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SystemSpec:
    """How to start one system's two services.

    Both read the same environment variables (RABBITMQ_URL, REDIS_URL, RATE_LIMIT,
    INGEST_HOST/PORT, MONGODB_URL, MONGODB_DATABASE, PROCESSOR_HOST/PORT).
    """

    name: str
    ingest_command: tuple[str, ...]
    processor_command: tuple[str, ...]
    cwd: Path
    reads: bool  # serves GET /api/v1/users/{id}/activities
    stored_metric: str  # the processor's counter of events stored, on its /metrics
    env: Mapping[str, str] = field(default_factory=dict)
    description: str = ""


def event_tracker_spec(tracking_plan: Path | None = None) -> SystemSpec:
    """This repository's services, as `make run` starts them; with a tracking plan if given."""
    plan_env = {"TRACKING_PLAN_DIR": str(tracking_plan.resolve())} if tracking_plan else {}
    plan_note = f", tracking plan {tracking_plan.name}/ enforced" if tracking_plan else ""
    return SystemSpec(
        name="event-tracker",
        ingest_command=(sys.executable, "-m", "ingest"),
        processor_command=(sys.executable, "-m", "processor"),
        cwd=ROOT,
        reads=True,
        stored_metric="event_tracker_processor_events_persisted_total",
        env={
            "INGEST_WORKERS": INGEST_WORKERS,
            "READ_API_KEYS": READ_API_KEY,
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
            **plan_env,
        },
        description=f"ingest workers {INGEST_WORKERS}{plan_note}",
    )


class Service(ServiceProcess):
    """A service of the system under test, its output in a log file, ready on /health/ready."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str],
        port: int,
        cwd: Path,
        log: Path,
    ) -> None:
        """Prepare `command` with `env` added to this environment, serving HTTP on `port`."""
        super().__init__(
            name, env, port, stderr=log, command=command, cwd=cwd, ready_path="/health/ready"
        )

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> "Service":
        """Start it and wait until `/health/ready` answers 200."""
        super().start(timeout)
        return self

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Stop it; say so when it had failed by itself or ignored SIGTERM."""
        process = self.process
        if process is None:
            return 0
        failed_alone = process.poll() is not None
        began = time.monotonic()
        code = super().stop(sig, timeout)
        if failed_alone and code not in (0, -signal.SIGTERM):
            say(f"  {self.name} had exited with {code}:\n{self.tail()}")
        elif code == -signal.SIGKILL and time.monotonic() - began >= timeout:
            say(f"  {self.name} ignored SIGTERM for {timeout:.0f} s: killed")
        self.process = None
        return code

    def metric(self, name: str) -> float | None:
        """The value of one unlabelled metric on its /metrics; None when it does not answer."""
        url = f"{self.base_url}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=METRICS_TIMEOUT_SECONDS) as answer:  # noqa: S310
                text = answer.read().decode()
        except (OSError, urllib.error.URLError):
            return None
        for line in text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[-1])
        return 0.0  # a counter not yet incremented is not listed by every client library


@contextlib.contextmanager
def running(service: Service) -> Iterator[Service]:
    """Start a service and stop it whatever happens."""
    try:
        yield service.start()
    finally:
        service.stop()


@dataclass
class SystemStack:
    """One system's own vhost, Redis and database, and how to start its services."""

    spec: SystemSpec
    rabbitmq_url: str
    redis_url: str
    mongodb_url: str
    database: str
    log_dir: Path
    pids: dict[str, int | None]  # redis, db (ours) and mq (the machine's RabbitMQ node)

    def service_env(self, rate_limit: str) -> dict[str, str]:
        """Environment of both services."""
        return {
            "RABBITMQ_URL": self.rabbitmq_url,
            "REDIS_URL": self.redis_url,
            "MONGODB_URL": self.mongodb_url,
            "MONGODB_DATABASE": self.database,
            "INGEST_HOST": "127.0.0.1",
            "PROCESSOR_HOST": "127.0.0.1",
            "RATE_LIMIT": rate_limit,
            # Reads have a budget of their own; the read rows measure the database, not it.
            "READ_RATE_LIMIT": UNLIMITED_RATE,
            **self.spec.env,
        }

    def ingest(self, rate_limit: str = UNLIMITED_RATE) -> Service:
        """The ingest service on a free loopback port (not started)."""
        port = free_port()
        env = {**self.service_env(rate_limit), "INGEST_PORT": str(port)}
        log = self.log_dir / f"{self.spec.name}-ingest.log"
        return Service(
            f"{self.spec.name} ingest", self.spec.ingest_command, env, port, self.spec.cwd, log
        )

    def processor(self) -> Service:
        """The processor on a free loopback port (not started)."""
        port = free_port()
        env = {**self.service_env(UNLIMITED_RATE), "PROCESSOR_PORT": str(port)}
        log = self.log_dir / f"{self.spec.name}-processor.log"
        return Service(
            f"{self.spec.name} processor",
            self.spec.processor_command,
            env,
            port,
            self.spec.cwd,
            log,
        )

    def mongo(self, timeout: float | None = None) -> AsyncMongoClient[dict[str, Any]]:
        """A client for this system's database server; `timeout` s bounds each operation.

        A server busy with work its clients gave up on (SecantusDB runs a query to its end
        after the client's timeout) can take minutes to answer: the bench's own calls stay
        bounded.
        """
        return AsyncMongoClient(
            self.mongodb_url,
            tz_aware=True,
            uuidRepresentation="standard",
            timeoutMS=None if timeout is None else int(timeout * 1000),
        )

    def meter(self, **services: Service | None) -> "CpuMeter":
        """CPU of the given services plus Redis, the database and the RabbitMQ node, from now."""
        pids = {name: (service.pid if service else None) for name, service in services.items()}
        return CpuMeter({**pids, **self.pids})


@contextlib.contextmanager
def system_stack(spec: SystemSpec) -> Iterator[SystemStack]:
    """Own vhost, own Redis, own SecantusDB (unless MONGODB_URL is set) and database.

    Everything is stopped or deleted at the end, whatever happens.
    """
    base_url = os.environ.get("RABBITMQ_URL", DEFAULT_RABBITMQ_URL)
    database = f"event_tracker_bench_{uuid.uuid4().hex[:8]}"
    with rabbit_vhost(base_url) as rabbitmq_url, contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-run-")))
        redis = stack.enter_context(RedisServer())
        mongodb_url = os.environ.get("MONGODB_URL", "")
        database_pid = None
        if not mongodb_url:
            server = stack.enter_context(SecantusServer(scratch / "secantus"))
            mongodb_url = server.url
            database_pid = server.process.pid if server.process else None
        else:
            stack.callback(_drop_database, mongodb_url, database)
        say(
            f"  {spec.name}: vhost {rabbitmq_url.rsplit('/', 1)[-1]}, redis :{redis.port}, "
            f"database {database} on {mongodb_url.split('?')[0]}"
        )
        (scratch / "logs").mkdir()
        pids = {
            "redis": redis.process.pid if redis.process else None,
            "db": database_pid,
            "mq": rabbitmq_pid(),
        }
        yield SystemStack(
            spec, rabbitmq_url, redis.url, mongodb_url, database, scratch / "logs", pids
        )


def _drop_database(url: str, database: str) -> None:
    client: MongoClient[dict[str, Any]]
    with MongoClient(url) as client:
        client.drop_database(database)


def rabbitmq_pid() -> int | None:
    """The OS pid of the RabbitMQ node `rabbitmqctl` manages (shared with the machine)."""
    try:
        status = json.loads(rabbitmqctl("status", "--formatter", "json"))
        return int(status["pid"])
    except (RuntimeError, OSError, ValueError, KeyError, TypeError):
        return None


def cpu_seconds(pid: int | None) -> float | None:
    """User plus system CPU time of a process and all its descendants (Linux /proc)."""
    if pid is None:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = [pid]
    while todo:
        each = todo.pop()
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            if each == pid:
                return None
            continue  # a child that ended meanwhile: only its own share is lost
        for children in Path(f"/proc/{each}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                todo += map(int, children.read_text().split())
    return total


class CpuMeter:
    """CPU time named processes (each with its descendants) spend from now on."""

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        """Start counting for each named pid (None: not running or not measurable)."""
        self.pids = dict(pids)
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.started = time.perf_counter()

    def seconds(self) -> dict[str, float]:
        """CPU seconds of each measurable process since the start."""
        spent = {}
        for name, pid in self.pids.items():
            begin, end = self.start[name], cpu_seconds(pid)
            if begin is not None and end is not None:
                spent[name] = end - begin
        return spent

    def per_event_us(self, events: Mapping[str, int] | int) -> dict[str, float]:
        """Microseconds of CPU per event of each process.

        `events` is one count for all, or a count per process name (missing names: skipped).
        """
        spent = self.seconds()
        counts = events if isinstance(events, Mapping) else dict.fromkeys(spent, events)
        return {
            name: seconds / counts[name] * 1e6
            for name, seconds in spent.items()
            if counts.get(name, 0) > 0
        }


def _loadgen_command(port: int, label: str, options: Mapping[str, float | int | str]) -> list[str]:
    command = [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--label", label]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    return command


def loadgen(port: int, label: str, **options: float | int | str) -> dict[str, Any]:
    """Run the load generator in its own process and return its summary."""
    return loadgens((port, label, options))[0]


def loadgens(*runs: tuple[int, str, Mapping[str, float | int | str]]) -> list[dict[str, Any]]:
    """Run several load generators at once (each its own process); their summaries in order."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for port, label, options in runs:
            command = _loadgen_command(port, label, options)
            say(f"  {label}: {' '.join(command[5:])}")
            processes.append(
                subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT)  # noqa: S603 - ours
            )
        summaries = []
        for process in processes:
            out, _ = process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"load generator failed with {process.returncode}")
            summaries.append(json.loads(out))
        return summaries
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


async def _queue(rabbitmq_url: str, purge: bool) -> int:
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(ACTIVITY_QUEUE, passive=True)
        count = int(queue.declaration_result.message_count or 0)
        if purge and count:
            await queue.purge()
        return count


def queue_depth(rabbitmq_url: str) -> int:
    """Messages ready in the activity queue (a passive declare: no side effects)."""
    return asyncio.run(_queue(rabbitmq_url, purge=False))


def purge_queue(rabbitmq_url: str) -> int:
    """Drop the messages ready in the activity queue (our own vhost); return how many."""
    return asyncio.run(_queue(rabbitmq_url, purge=True))


async def _stored_count(stack: SystemStack) -> int:
    client = stack.mongo(timeout=COUNT_TIMEOUT_SECONDS)
    try:
        return await client[stack.database]["activities"].estimated_document_count()
    finally:
        await client.close()


def stored_count(stack: SystemStack) -> int:
    """Documents in the activities collection."""
    return asyncio.run(_stored_count(stack))


def wait_stored(
    processor: Service,
    metric: str,
    expected: float,
    within: float,
    label: str,
    interval: float = 0.1,
) -> list[tuple[float, float]]:
    """Poll the processor's stored-events counter until `expected` or `within` s.

    Returns (perf_counter, count) samples, at least one. The processor's own counter, not
    the collection's count: SecantusDB counts a collection by reading it (about 0.5 s of
    its CPU at 100,000 documents), which polling would take from the drain it measures.
    """
    samples: list[tuple[float, float]] = []
    started = last_said = time.perf_counter()
    count = 0.0
    while True:
        value = processor.metric(metric)
        if value is not None:
            count = value
            samples.append((time.perf_counter(), count))
        now = time.perf_counter()
        if count >= expected or now - started > within:
            if not samples:
                samples.append((now, count))
            return samples
        if now - last_said >= 5:
            say(f"    {label}: {count:,.0f} of {expected:,.0f} stored after {now - started:.0f} s")
            last_said = now
        time.sleep(interval)


async def _latencies(stack: SystemStack, event_type: str) -> list[float]:
    client = stack.mongo(timeout=READ_BACK_TIMEOUT_SECONDS)
    try:
        cursor = client[stack.database]["activities"].find(
            {"event_type": event_type}, {"received_at": 1, "processed_at": 1, "_id": 0}
        )
        return sorted(
            [
                (doc["processed_at"] - doc["received_at"]).total_seconds() * 1000
                async for doc in cursor
            ]
        )
    finally:
        await client.close()


def stored_latencies(stack: SystemStack, event_type: str) -> list[float] | None:
    """processed_at - received_at of every stored event of `event_type`, sorted, in ms.

    None when the database did not answer in time.
    """
    try:
        return asyncio.run(_latencies(stack, event_type))
    except PyMongoError as error:
        say(f"  could not read back {event_type} events: {type(error).__name__}")
        return None
