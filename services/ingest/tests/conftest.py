"""Fixtures of the ingest tests: apps built from test settings, Redis keys of their own."""

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
import redis
from asgi_lifespan import LifespanManager

from activity_contract.testing import DEFAULT_REDIS_URL
from ingest.app import create_app
from ingest.settings import IngestSettings

REDIS_URL = os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL)
PEER = "198.51.100.10"

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def delete_keys(redis_url: str, prefix: str) -> None:
    """Delete the keys under `prefix` (only this test's own)."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_key_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"event-tracker-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    delete_keys(REDIS_URL, prefix)


@pytest.fixture
def settings_for(rabbit_url: str, redis_key_prefix: str) -> Callable[..., IngestSettings]:
    """Build ingest settings for this test's vhost and key prefix, with overrides."""

    def build(**overrides: Any) -> IngestSettings:
        values: dict[str, Any] = {
            "rabbitmq_url": rabbit_url,
            "redis_url": REDIS_URL,
            "rate_limit_key_prefix": redis_key_prefix,
            "rate_limit": "3/minute",
        }
        values.update(overrides)
        return IngestSettings(**values)

    return build


@pytest.fixture
def client_for(settings_for: Callable[..., IngestSettings]) -> ClientFactory:
    """Start an app (lifespan included) and give an HTTP client for it.

    `peer` is the socket address the app sees; other keywords are settings.
    """

    @asynccontextmanager
    async def open_client(peer: str = PEER, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(settings_for(**overrides))
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app, client=(peer, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
                yield http

    return open_client
