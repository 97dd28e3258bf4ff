"""Fixtures shared by every test: real RabbitMQ vhosts, Redis keys, a MongoDB-compatible server."""

import os
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
import redis
from pymongo import AsyncMongoClient

from activity_testing.processes import TEST_REDIS_URL, SecantusServer
from activity_testing.rabbitmq import DEFAULT_RABBITMQ_URL, VhostPool
from activity_testing.simulation import EXPLORATIONS, Exploration
from ingest.settings import IngestSettings
from processor.settings import ProcessorSettings

RABBITMQ_BASE_URL = os.environ.get("TEST_RABBITMQ_URL", DEFAULT_RABBITMQ_URL)
# Every variable the services read: the fields of their settings classes, upper-cased.
SERVICE_VARIABLES = frozenset(
    name.upper() for name in (*IngestSettings.model_fields, *ProcessorSettings.model_fields)
)
# The explorer runs of the session, as the test reports brought them in.
EXPLORED: list[Exploration] = []


@pytest.fixture(scope="session")
def vhost_pool() -> Iterator[VhostPool]:
    """Fresh RabbitMQ vhosts, made a batch at a time; those left over deleted at the end."""
    pool = VhostPool(RABBITMQ_BASE_URL)
    yield pool
    pool.close()


@pytest.fixture
def rabbit_url(vhost_pool: VhostPool) -> Iterator[str]:
    """A RabbitMQ URL on a virtual host of this test's own, deleted afterwards."""
    with vhost_pool.vhost() as url:
        yield url


@pytest.fixture
def redis_key_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"event-tracker-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read only what the test sets: no `.env` (another cwd), no service variables."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name in SERVICE_VARIABLES:
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def mongo_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`MONGODB_URL` when it names a server, otherwise a SecantusDB started for the session."""
    if url := os.environ.get("MONGODB_URL"):
        yield url
        return
    with SecantusServer(tmp_path_factory.mktemp("secantus")) as server:
        yield server.url


@pytest.fixture
async def mongo_database(mongo_server_url: str) -> AsyncIterator[str]:
    """The name of a database of this test's own, dropped afterwards."""
    name = f"event_tracker_test_{uuid.uuid4().hex[:12]}"
    yield name
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_server_url)
    try:
        await client.drop_database(name)
    finally:
        await client.close()


@pytest.fixture
def secantus_storage(tmp_path: Path) -> Path:
    """A storage folder for a SecantusDB server a test starts and stops itself."""
    return tmp_path / "secantus"


# Tests that run a minute or more; they start first, so that with pytest-xdist's workers the
# short ones fill the gaps at the end instead of one long test running on alone.
LONG_TESTS = ("tests/explorer/", "tests/e2e/test_cluster_faults.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first (`slow`, LONG_TESTS), then the end-to-end ones, then the rest."""

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("slow") or item.nodeid.startswith(LONG_TESTS):
            return 0
        return 1 if item.get_closest_marker("e2e") else 2

    items.sort(key=rank)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Put the explorer runs a test made in its report, which pytest-xdist's workers send on."""
    report = yield
    while EXPLORATIONS:
        report.user_properties.append(("exploration", asdict(EXPLORATIONS.pop(0))))
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect the explorer runs the reports carry (from this process or from workers)."""
    for name, value in report.user_properties:
        if name == "exploration" and isinstance(value, dict):
            EXPLORED.append(Exploration(**value))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many fault schedules each explorer ran, and in how long."""
    for run in EXPLORED:
        terminalreporter.write_line(
            f"explorer {run.name}: {run.schedules} seeded fault schedules in "
            f"{run.seconds:.1f} s ({run.virtual_seconds:,.0f} s of simulated time)"
        )
