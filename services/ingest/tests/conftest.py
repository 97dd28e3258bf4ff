"""Fixtures of the ingest tests: apps built from test settings, Redis keys of their own,
the app on FastStream's in-memory test broker, and the stored activity the read API reads."""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from faststream.rabbit import RabbitMessage
from faststream.rabbit.testing import TestRabbitBroker
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from activity_contract.storage import (
    ACTIVITIES_COLLECTION,
    USER_TIMELINE_INDEX,
    USER_TIMELINE_KEYS,
)
from activity_contract.topology import ACTIVITY_QUEUE
from activity_testing.processes import TEST_REDIS_URL
from ingest.app import create_app
from ingest.publishing import ActivityPublisher
from ingest.settings import IngestSettings

REDIS_URL = TEST_REDIS_URL
PEER = "198.51.100.10"

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


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
        return IngestSettings(_env_file=None, **values)

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


@dataclass
class Published:
    """Messages the in-memory broker delivered to the activity queue."""

    messages: list[RabbitMessage] = field(default_factory=list)


# Unit tests reach no Redis: nothing listens here, so the limiter decides in memory.
NO_REDIS_URL = "redis://127.0.0.1:1/0"


@pytest.fixture
def settings() -> IngestSettings:
    """Defaults (no `.env`), a rate limit these tests never reach, no Redis."""
    return IngestSettings(_env_file=None, redis_url=NO_REDIS_URL, rate_limit="1000000/minute")


@pytest.fixture
async def published_and_client(
    settings: IngestSettings,
) -> AsyncIterator[tuple[Published, httpx.AsyncClient, ActivityPublisher]]:
    """The ingest app on the in-memory broker, a client, and what reached the queue."""
    app = create_app(settings)
    publisher: ActivityPublisher = app.state.publisher
    published = Published()

    @publisher.broker.subscriber(ACTIVITY_QUEUE)
    async def capture(message: RabbitMessage) -> None:
        published.messages.append(message)

    async with (
        TestRabbitBroker(publisher.broker),
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://ingest"
        ) as client,
    ):
        yield published, client, publisher


@pytest.fixture
def published(
    published_and_client: tuple[Published, httpx.AsyncClient, ActivityPublisher],
) -> Published:
    """What reached the queue."""
    return published_and_client[0]


@pytest.fixture
def client(
    published_and_client: tuple[Published, httpx.AsyncClient, ActivityPublisher],
) -> httpx.AsyncClient:
    """A client for the app."""
    return published_and_client[1]


@pytest.fixture
def publisher(
    published_and_client: tuple[Published, httpx.AsyncClient, ActivityPublisher],
) -> ActivityPublisher:
    """The app's publisher."""
    return published_and_client[2]


BuildApp = Callable[..., Awaitable[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture
async def build_app(settings_for: Callable[..., IngestSettings]) -> AsyncIterator[BuildApp]:
    """Build (and start) ingest apps on this test's vhost; settings overrides as keywords.

    The rate limit is out of reach unless a test sets one.
    """
    async with AsyncExitStack() as stack:

        async def build(**overrides: Any) -> tuple[FastAPI, httpx.AsyncClient]:
            app = create_app(settings_for(**{"rate_limit": "1000000/minute", **overrides}))
            manager = await stack.enter_async_context(LifespanManager(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=manager.app), base_url="http://ingest"
                )
            )
            return app, client

        yield build


@pytest.fixture
async def activities(
    mongo_server_url: str, mongo_database: str
) -> AsyncIterator[AsyncCollection[dict[str, Any]]]:
    """This test's `activities` collection, with the user timeline index the processor makes."""
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_server_url, tz_aware=True, uuidRepresentation="standard"
    )
    collection = mongo[mongo_database][ACTIVITIES_COLLECTION]
    await collection.create_index(list(USER_TIMELINE_KEYS), name=USER_TIMELINE_INDEX)
    yield collection
    await mongo.close()
