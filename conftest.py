"""Fixtures shared by every test: real RabbitMQ vhosts, Redis keys, a MongoDB-compatible server."""

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from pymongo import AsyncMongoClient

from activity_testing.processes import TEST_REDIS_URL, SecantusServer
from activity_testing.rabbitmq import DEFAULT_RABBITMQ_URL, VhostPool
from ingest.settings import IngestSettings
from processor.settings import ProcessorSettings

RABBITMQ_BASE_URL = os.environ.get("TEST_RABBITMQ_URL", DEFAULT_RABBITMQ_URL)
# Every variable the services read: the fields of their settings classes, upper-cased.
SERVICE_VARIABLES = frozenset(
    name.upper() for name in (*IngestSettings.model_fields, *ProcessorSettings.model_fields)
)


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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many fault schedules each explorer ran, and in how long."""
    from activity_testing.simulation import EXPLORATIONS

    for run in EXPLORATIONS:
        terminalreporter.write_line(
            f"explorer {run.name}: {run.schedules} seeded fault schedules in "
            f"{run.seconds:.1f} s ({run.virtual_seconds:,.0f} s of simulated time)"
        )
