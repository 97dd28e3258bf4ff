"""Processor health and metrics routes on its own port (design §11)."""

import asyncio
import json

from faststream.asgi import AsgiResponse, get
from faststream.asgi.handlers import HttpHandler
from faststream.rabbit import RabbitBroker
from pymongo import AsyncMongoClient

from processor.handlers import Progress

PING_SECONDS = 1.0


def _json(body: dict[str, object], status_code: int = 200) -> AsgiResponse:
    return AsgiResponse(
        json.dumps(body).encode(), status_code, headers={"content-type": "application/json"}
    )


async def _mongo_up(client: AsyncMongoClient[dict[str, object]]) -> bool:
    try:
        async with asyncio.timeout(PING_SECONDS):
            await client.admin.command("ping")
    except Exception:
        return False
    return True


def _consumer_state(broker: RabbitBroker, progress: Progress) -> str:
    if not all(subscriber.running for subscriber in broker.subscribers):
        return "not_consuming"
    return "stalled" if progress.stalled() else "up"


def health_routes(
    broker: RabbitBroker, client: AsyncMongoClient[dict[str, object]], progress: Progress
) -> list[tuple[str, HttpHandler]]:
    """`/health/live` and `/health/ready` (broker, MongoDB and a consumer that moves).

    The consumer counts as up only once the broker started it: FastStream serves HTTP
    as soon as its start-up hooks ran, before the subscriber declares the activity queue
    and consumes from it.
    """

    @get(include_in_schema=False)
    async def live(_: object) -> AsgiResponse:
        """The process is up."""
        return _json({"status": "ok"})

    @get(include_in_schema=False)
    async def ready(_: object) -> AsgiResponse:
        """200 when the broker and MongoDB answer and the consumer moves, 503 otherwise."""
        checks = {
            "broker": "up" if await broker.ping(timeout=PING_SECONDS) else "down",
            "mongodb": "up" if await _mongo_up(client) else "down",
            "consumer": _consumer_state(broker, progress),
        }
        up = all(state == "up" for state in checks.values())
        return _json(
            {"status": "ready" if up else "unavailable", "checks": checks}, 200 if up else 503
        )

    return [("/health/live", live), ("/health/ready", ready)]
