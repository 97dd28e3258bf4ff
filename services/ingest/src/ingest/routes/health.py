"""Liveness and readiness (design §3.4)."""

import asyncio
from typing import Literal

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from ingest.deps import MetricsDep, PublisherDep, SharedWindowsDep
from ingest.http.metrics import METRICS_PATH
from ingest.reads import ActivityReader

router = APIRouter(tags=["operations"])

# `missing` and `unknown` are the queue's: gone, or RabbitMQ did not say in time;
# `auth_failed` is Redis's: it refuses REDIS_URL's credentials (`degraded`: no answer).
DependencyState = Literal[
    "up", "down", "degraded", "auth_failed", "not_configured", "missing", "unknown"
]
PING_SECONDS = 1.0


class Live(BaseModel):
    """The process is up."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Whether ingest can accept events, and the state of each dependency."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, DependencyState]


async def _mongodb_state(reader: ActivityReader | None) -> DependencyState:
    if reader is None:
        return "not_configured"
    try:
        async with asyncio.timeout(PING_SECONDS):
            return "up" if await reader.is_available() else "down"
    except TimeoutError:
        return "down"


@router.get("/health/live")
async def live() -> Live:
    """Answer while the process runs."""
    return Live()


@router.get("/health/ready", responses={503: {"model": Readiness}})
async def ready(
    request: Request, publisher: PublisherDep, shared_windows: SharedWindowsDep
) -> Response:
    """200 when the broker connection is usable and the queue exists, else 503.

    Only the broker and its queue decide. Without Redis each instance rate limits in memory
    (design §8), Redis refusing the credentials too (`auth_failed`: taking every instance
    out of service over the limiter's store would stop ingestion altogether), and without
    MongoDB only the read API fails (503 per request): events are still accepted. A
    missing queue is declared again meanwhile (`QueueKeeper`).
    """
    broker_up, queue, _, mongodb = await asyncio.gather(
        publisher.is_connected(),
        publisher.queues.state(),
        shared_windows.ping(),
        _mongodb_state(request.app.state.reader),
    )
    checks: dict[str, DependencyState] = {
        "broker": "up" if broker_up else "down",
        "queue": queue,
        "redis": shared_windows.state,  # as the ping just left it
        "mongodb": mongodb,
    }
    ready = broker_up and queue != "missing"
    body = Readiness(status="ready" if ready else "unavailable", checks=checks)
    return Response(
        body.model_dump_json(),
        status_code=200 if ready else 503,
        media_type="application/json",
    )


@router.get(METRICS_PATH, include_in_schema=False)
async def metrics(metrics: MetricsDep) -> Response:
    """Every ingest metric in Prometheus text format."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
