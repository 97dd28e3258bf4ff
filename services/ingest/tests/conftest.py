"""Ingest fixtures: the app built from test settings, served through an ASGI client."""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from activity_contract.storage import (
    ACTIVITIES_COLLECTION,
    USER_TIMELINE_INDEX,
    USER_TIMELINE_KEYS,
)
from ingest.app import create_app
from ingest.settings import IngestSettings

BuildApp = Callable[..., Awaitable[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture
async def build_app(rabbit_url: str) -> AsyncIterator[BuildApp]:
    """Build (and start) ingest apps on this test's vhost; settings overrides as keywords."""
    async with AsyncExitStack() as stack:

        async def build(**overrides: Any) -> tuple[FastAPI, httpx.AsyncClient]:
            settings = IngestSettings(**{"rabbitmq_url": rabbit_url, **overrides})
            app = create_app(settings)
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
