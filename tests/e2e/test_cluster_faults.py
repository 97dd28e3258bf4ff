"""RabbitMQ's own cluster under node crashes (design §10): three nodes behind HAProxy.

Three nodes of this machine's RabbitMQ install run as child processes of this test's own
(`activity_testing.rabbit_nodes`), clustered and put behind a HAProxy child process shaped like
deploy/cluster/haproxy-amqp.cfg; ingest and processor connect through it. Under load the
quorum queue's leader is killed with SIGKILL, then the node the processor consumes from.
"""

import asyncio
import contextlib
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.collection import AsyncCollection

from activity_contract.topology import ACTIVITY_QUEUE, DEAD_LETTER_QUEUE
from activity_testing.events import event_payload
from activity_testing.processes import TEST_REDIS_URL, ServiceProcess, free_port, wait_for_port
from activity_testing.rabbit_nodes import (
    WITHIN,
    RabbitCluster,
    RabbitNode,
    missing_rabbitmq,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.cluster]

PROCESSOR_METRICS = "event_tracker_processor_events"

Document = dict[str, Any]
WaitUntil = Callable[..., Awaitable[bool]]


def missing_tools() -> str | None:
    """Why this test cannot run here, or None."""
    if shutil.which("haproxy") is None:
        return (
            "haproxy is not installed and could not be installed (scripts/test.sh installs it "
            "with apt-get through scripts/test_package.sh when run as root; otherwise: apt-get "
            "install haproxy)"
        )
    return missing_rabbitmq()


class HAProxy:
    """HAProxy in a child process: AMQP over TCP to the cluster's nodes, health-checked."""

    def __init__(self, folder: Path, nodes: list[RabbitNode]) -> None:
        """Write a configuration shaped like deploy/cluster/haproxy-amqp.cfg, on free ports."""
        self.port = free_port()
        self.config = folder / "haproxy.cfg"
        servers = "\n".join(
            f"    server {node.name.split('@')[0]} 127.0.0.1:{node.amqp_port}" for node in nodes
        )
        self.config.write_text(
            f"""global
    maxconn 1000

defaults
    mode tcp
    timeout connect 2s
    timeout client 3h
    timeout server 3h
    retries 3
    option redispatch

frontend amqp
    bind 127.0.0.1:{self.port}
    default_backend rabbitmq

backend rabbitmq
    balance leastconn
    default-server check inter 500ms fall 2 rise 2 on-marked-down shutdown-sessions
{servers}
"""
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "HAProxy":
        """Run it in the foreground (`-db`) and wait until it listens."""
        haproxy = shutil.which("haproxy") or "haproxy"
        subprocess.run([haproxy, "-c", "-q", "-f", str(self.config)], check=True, timeout=30)
        self.process = subprocess.Popen(
            [haproxy, "-db", "-f", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port("127.0.0.1", self.port)
        return self

    def stop(self) -> None:
        """Stop it and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class ClientLoad:
    """Clients posting new events; each retries a 503 with the same event id, as told."""

    http: httpx.AsyncClient
    accepted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # still 503 when its client gave up
    answers: Counter[int] = field(default_factory=Counter)  # per attempt; 0: no HTTP answer
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, workers: int = 8) -> None:
        """Post new events from `workers` clients until `stopping` is set."""

        async def client() -> None:
            while not self.stopping.is_set():
                await self.post(str(uuid.uuid4()))

        await asyncio.gather(*(client() for _ in range(workers)))

    async def post(self, event_id: str, give_up_after: float = WITHIN) -> None:
        """Post one event until it is accepted, waiting `Retry-After` between attempts."""
        body = event_payload(event_id=event_id, user_id=f"user-{event_id[:4]}")
        deadline = time.monotonic() + give_up_after
        while True:
            try:
                response = await self.http.post("/api/v1/activities", json=body)
            except httpx.TransportError:
                self.answers[0] += 1
                retry_after = 1.0
            else:
                self.answers[response.status_code] += 1
                if response.status_code == 202:
                    self.accepted.append(event_id)
                    return
                if response.status_code != 503:
                    return  # judged by the test through `answers`
                retry_after = float(response.headers.get("Retry-After", "1"))
            if time.monotonic() + retry_after > deadline:
                self.refused.append(event_id)
                return
            await asyncio.sleep(retry_after)

    async def post_all(self, event_ids: list[str], concurrency: int = 8) -> None:
        """Post these events (each until accepted), `concurrency` at a time."""
        todo = iter(event_ids)

        async def client() -> None:
            for event_id in todo:
                await self.post(event_id)

        await asyncio.gather(*(client() for _ in range(concurrency)))


async def processor_counters(processor: ServiceProcess) -> dict[str, float]:
    """The processor's event counters (persisted, duplicate, dead_lettered, retried)."""
    async with httpx.AsyncClient(base_url=processor.base_url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    counters: dict[str, float] = {}
    pattern = rf"^{PROCESSOR_METRICS}_(\w+?)_total(?:{{[^}}]*}})? (\S+)$"
    for name, value in re.findall(pattern, text, re.MULTILINE):
        counters[name] = counters.get(name, 0.0) + float(value)
    return counters


@pytest.fixture
def cluster_folder() -> Iterator[Path]:
    """A temporary folder for the nodes' data and logs, HAProxy's config, service logs."""
    folder = Path(tempfile.mkdtemp(prefix="event-tracker-cluster-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def rabbit_cluster(cluster_folder: Path) -> Iterator[RabbitCluster]:
    """Three clustered RabbitMQ nodes of this test's own, killed and deleted afterwards."""
    if reason := missing_tools():
        pytest.skip(reason)
    cluster = RabbitCluster(cluster_folder)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def amqp_balancer(cluster_folder: Path, rabbit_cluster: RabbitCluster) -> Iterator[HAProxy]:
    """HAProxy in front of the cluster's nodes."""
    balancer = HAProxy(cluster_folder, rabbit_cluster.nodes)
    try:
        yield balancer.start()
    finally:
        balancer.stop()


@pytest.fixture
def cluster_services(
    cluster_folder: Path,
    amqp_balancer: HAProxy,
    mongo_server_url: str,
    mongo_database: str,
    redis_key_prefix: str,
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """Ingest and processor, both connected to the cluster through HAProxy, started."""
    env = {
        "RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:{amqp_balancer.port}/",
        "REDIS_URL": TEST_REDIS_URL,
        "RATE_LIMIT": "1000000/minute",
        "RATE_LIMIT_KEY_PREFIX": redis_key_prefix,
        "MONGODB_URL": mongo_server_url,
        "MONGODB_DATABASE": mongo_database,
        "INGEST_HOST": "127.0.0.1",
        "PROCESSOR_HOST": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }
    ingest_port, processor_port = free_port(), free_port()
    ingest = ServiceProcess(
        "ingest",
        {**env, "INGEST_PORT": str(ingest_port)},
        ingest_port,
        stderr=cluster_folder / "ingest.log",
    )
    processor = ServiceProcess(
        "processor",
        {**env, "PROCESSOR_PORT": str(processor_port)},
        processor_port,
        stderr=cluster_folder / "processor.log",
    )
    try:
        ingest.start()
        processor.start()
        yield ingest, processor
    finally:
        processor.stop()
        ingest.stop()
        for log in ("ingest.log", "processor.log"):  # shown when the test failed
            lines = (cluster_folder / log).read_text(errors="replace").splitlines()
            print(f"--- last lines of {log}", *lines[-20:], sep="\n")  # noqa: T201


@pytest.mark.timeout(600)
async def test_every_accepted_event_is_stored_once_while_cluster_nodes_crash(
    rabbit_cluster: RabbitCluster,
    cluster_services: tuple[ServiceProcess, ServiceProcess],
    activities: AsyncCollection[Document],
    wait_until: WaitUntil,
) -> None:
    cluster = rabbit_cluster
    ingest, processor = cluster_services
    timings: dict[str, float] = {}

    async def queue() -> dict[str, Any]:
        return await asyncio.to_thread(cluster.queue, ACTIVITY_QUEUE)

    async def is_down(node: RabbitNode) -> bool:
        return node.name not in await asyncio.to_thread(cluster.running_nodes)

    async def carries_on(load: ClientLoad, more: int = 200) -> None:
        accepted, stored = len(load.accepted), await activities.count_documents({})
        assert await wait_until(lambda: len(load.accepted) >= accepted + more, WITHIN), (
            "ingest stopped accepting"
        )
        assert await wait_until(lambda: _at_least(activities, stored + more), WITHIN), (
            "processor stopped storing"
        )

    async def crash(node: RabbitNode, label: str) -> float:
        """Kill `node`; wait until the cluster sees it down; return when it was killed."""
        killed_at = time.monotonic()
        node.kill()
        assert await wait_until(lambda: is_down(node), WITHIN), f"{node.name} still running"
        timings[f"{label}: seen down after"] = time.monotonic() - killed_at
        return killed_at

    async with httpx.AsyncClient(base_url=ingest.base_url, timeout=30) as http:
        for service in (ingest, processor):
            assert await wait_until(lambda s=service: _ready(s), WITHIN), f"{service.name}"
        assert len((await queue())["online"]) == 3  # a replica on each node
        load = ClientLoad(http)
        posting = asyncio.create_task(load.run())
        try:
            assert await wait_until(lambda: len(load.accepted) >= 300, WITHIN)

            # 1. The quorum queue's leader crashes: the two others elect a new one.
            leader = cluster.node((await queue())["leader"])
            killed_at = await crash(leader, "leader")
            assert await wait_until(lambda: _leader_moved(queue, leader), WITHIN)
            timings["leader: new leader after"] = time.monotonic() - killed_at
            await carries_on(load)
            timings["leader: load carried on after"] = time.monotonic() - killed_at

            # It comes back (the cluster can lose a node again) and rejoins by itself.
            leader.start()
            await asyncio.to_thread(cluster.await_startup, leader)
            assert await wait_until(lambda: _all_online(queue), WITHIN), "replica not back"

            # 2. The node the processor consumes through crashes: it reconnects elsewhere.
            assert await wait_until(lambda: _one_consumer(cluster), WITHIN), "no one consumer"
            consumer_nodes = await asyncio.to_thread(cluster.consumer_nodes, ACTIVITY_QUEUE)
            consumers_node = cluster.node(consumer_nodes.pop())
            killed_at = await crash(consumers_node, "processor's node")
            assert await wait_until(lambda: _consumer_moved(cluster, consumers_node), WITHIN), (
                "processor did not consume again"
            )
            timings["processor's node: consuming again after"] = time.monotonic() - killed_at
            await carries_on(load)
            timings["processor's node: load carried on after"] = time.monotonic() - killed_at
        except BaseException:
            posting.cancel()
            raise
        load.stopping.set()
        await posting

        # After the faults, with one node still down: new events are accepted and stored,
        after = ClientLoad(http)
        await after.post_all([str(uuid.uuid4()) for _ in range(200)])
        # and events sent again (a client that lost its 202) are recognised as duplicates.
        before = await processor_counters(processor)
        resent = ClientLoad(http)
        await resent.post_all(load.accepted[:100])

    answers = load.answers + after.answers + resent.answers
    assert set(answers) <= {202, 503}, answers
    assert not load.refused + after.refused + resent.refused, "clients gave up on 503s"
    assert len(after.accepted) == 200
    assert len(resent.accepted) == 100
    expected = set(load.accepted) | set(after.accepted)
    assert len(expected) == len(load.accepted) + len(after.accepted)

    assert await wait_until(lambda: _at_least(activities, len(expected)), WITHIN)
    assert await wait_until(lambda: _drained(queue), WITHIN), "queue not drained"
    stored = Counter([str(doc["_id"]) async for doc in activities.find({}, {"_id": 1})])
    assert [event_id for event_id, n in stored.items() if n > 1] == []
    assert set(stored) == expected, (
        f"missing {len(expected - set(stored))}, unexpected {len(set(stored) - expected)}"
    )
    # The processor's own account. An event is counted as persisted after its write and ack;
    # a handler cancelled by a lost connection after the write counts nothing, and its
    # message, never acknowledged, comes back and is recognised as a duplicate. So: never
    # more persisted than stored, and a duplicate for every stored event not counted as
    # persisted, besides the resent ones (counted just after their ack: wait for them).
    assert await wait_until(
        lambda: _counted(processor, len(stored), before.get("duplicate", 0), len(resent.accepted)),
        WITHIN,
    ), f"processor's account does not add up: {await processor_counters(processor)}"
    counters = await processor_counters(processor)
    assert counters.get("dead_lettered", 0) == 0
    dead_letters = await asyncio.to_thread(cluster.queue, DEAD_LETTER_QUEUE)
    assert dead_letters["messages"] == 0

    redelivered = await activities.count_documents({"redelivered": True})
    print(  # noqa: T201 - the figures of this run, shown with -rP
        f"accepted {len(expected)} (load {len(load.accepted)}, after the faults "
        f"{len(after.accepted)}), answers {dict(answers)}, stored {len(stored)}, "
        f"persisted as new {counters['persisted']:.0f}, duplicates recognised "
        f"{counters['duplicate']:.0f} (of which resent {len(resent.accepted)}), "
        f"stored as redelivered {redelivered}",
        *(f"{label} {seconds:.1f} s" for label, seconds in timings.items()),
        sep="\n",
    )


async def _ready(service: ServiceProcess) -> bool:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=5) as http:
        with contextlib.suppress(httpx.HTTPError):
            return (await http.get("/health/ready")).status_code == 200
    return False


async def _at_least(activities: AsyncCollection[Document], count: int) -> bool:
    return await activities.count_documents({}) >= count


async def _leader_moved(queue: Callable[[], Awaitable[dict[str, Any]]], old: RabbitNode) -> bool:
    state = await queue()
    return state.get("leader") not in (None, "", old.name) and state["leader"] in state["online"]


async def _all_online(queue: Callable[[], Awaitable[dict[str, Any]]]) -> bool:
    return len((await queue())["online"]) == 3


async def _drained(queue: Callable[[], Awaitable[dict[str, Any]]]) -> bool:
    return bool((await queue())["messages"] == 0)


async def _one_consumer(cluster: RabbitCluster) -> bool:
    return len(await asyncio.to_thread(cluster.consumer_nodes, ACTIVITY_QUEUE)) == 1


async def _counted(
    processor: ServiceProcess, stored: int, duplicates_before: float, resent: int
) -> bool:
    counters = await processor_counters(processor)
    uncounted = stored - counters["persisted"]
    return 0 <= uncounted <= counters["duplicate"] - resent and (
        counters["duplicate"] >= duplicates_before + resent
    )


async def _consumer_moved(cluster: RabbitCluster, old: RabbitNode) -> bool:
    # The queue may keep listing the crashed node's consumer (suspected down) until that
    # node is back: look for one on another node.
    nodes = await asyncio.to_thread(cluster.consumer_nodes, ACTIVITY_QUEUE)
    return bool(nodes - {old.name})
