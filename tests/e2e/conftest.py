"""The whole pipeline as real processes: ingest and processor against real services."""

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from activity_contract.testing import DEFAULT_REDIS_URL, ServiceProcess, free_port

Document = dict[str, Any]
WaitForCount = Callable[[int], Awaitable[int]]

REDIS_URL = os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL)


@pytest.fixture
def stack_env(
    rabbit_url: str, mongo_server_url: str, mongo_database: str
) -> Iterator[dict[str, str]]:
    """Environment for both services: this test's vhost, database, Redis keys, free ports.

    The rate limit is lifted far above what a test posts from 127.0.0.1; the Redis keys
    it leaves are deleted afterwards.
    """
    key_prefix = f"event-tracker-test-{uuid.uuid4().hex[:12]}:"
    yield {
        "RABBITMQ_URL": rabbit_url,
        "REDIS_URL": REDIS_URL,
        "RATE_LIMIT": "1000000/minute",
        "RATE_LIMIT_KEY_PREFIX": key_prefix,
        "MONGODB_URL": mongo_server_url,
        "MONGODB_DATABASE": mongo_database,
        "INGEST_PORT": str(free_port()),
        "PROCESSOR_PORT": str(free_port()),
        "INGEST_HOST": "127.0.0.1",
        "PROCESSOR_HOST": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{key_prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def ingest(stack_env: dict[str, str]) -> Iterator[ServiceProcess]:
    """The ingest service, started."""
    with ServiceProcess("ingest", stack_env, int(stack_env["INGEST_PORT"])) as service:
        yield service


@pytest.fixture
def processor(stack_env: dict[str, str]) -> Iterator[ServiceProcess]:
    """The processor service, not started: the test decides when (`start()`)."""
    service = ServiceProcess("processor", stack_env, int(stack_env["PROCESSOR_PORT"]))
    yield service
    service.stop()


@pytest.fixture
async def client(ingest: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the running ingest service."""
    async with httpx.AsyncClient(base_url=ingest.base_url, timeout=30) as http:
        yield http


@pytest.fixture
async def activities(
    mongo_server_url: str, mongo_database: str
) -> AsyncIterator[AsyncCollection[Document]]:
    """The `activities` collection of this test's database."""
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(
        mongo_server_url, tz_aware=True, uuidRepresentation="standard"
    )
    yield mongo[mongo_database]["activities"]
    await mongo.close()


@pytest.fixture
def wait_for_count(activities: AsyncCollection[Document]) -> WaitForCount:
    """Wait until the collection holds `expected` documents or `within` s pass; return the count."""

    async def wait(expected: int, within: float = 60.0) -> int:
        deadline = time.monotonic() + within
        count = await activities.count_documents({})
        while count < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            count = await activities.count_documents({})
        return count

    return wait
