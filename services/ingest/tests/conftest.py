"""Ingest app fixtures: the real app with FastStream's in-memory test broker."""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from asgi_lifespan import LifespanManager
from faststream.rabbit import RabbitMessage
from faststream.rabbit.testing import TestRabbitBroker

from activity_contract.topology import ACTIVITY_QUEUE
from ingest.app import create_app
from ingest.publishing import ActivityPublisher
from ingest.settings import IngestSettings


@dataclass
class Published:
    """Messages the in-memory broker delivered to the activity queue."""

    messages: list[RabbitMessage] = field(default_factory=list)


@pytest.fixture
def settings() -> IngestSettings:
    """Default settings, independent of the developer's environment and `.env`."""
    return IngestSettings.model_construct()


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
