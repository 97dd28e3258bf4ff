"""Liveness and readiness (SPEC §3.4)."""

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ingest.dependencies import PublisherDep
from ingest.rate_limit import RateLimiterDep

router = APIRouter(prefix="/health", tags=["health"])

DependencyState = Literal["up", "down", "degraded"]


class Live(BaseModel):
    """The process is up."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Whether ingest can accept events, and the state of each dependency."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, DependencyState]


@router.get("/live")
async def live() -> Live:
    """Answer while the process runs."""
    return Live()


@router.get("/ready", responses={503: {"model": Readiness}})
async def ready(publisher: PublisherDep, rate_limiter: RateLimiterDep) -> JSONResponse:
    """200 when the broker connection is usable, 503 otherwise.

    Redis only degrades: without it each instance rate limits in memory (SPEC §8).
    """
    broker_up = await publisher.is_connected()
    redis_up = await rate_limiter.redis_state()
    body = Readiness(
        status="ready" if broker_up else "unavailable",
        checks={"broker": "up" if broker_up else "down", "redis": "up" if redis_up else "degraded"},
    )
    return JSONResponse(body.model_dump(), status_code=200 if broker_up else 503)
