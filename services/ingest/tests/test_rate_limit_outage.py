"""Fail-open: a Redis of the test's own is stopped, frozen and restarted under the app."""

import asyncio
import logging
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from activity_testing.events import event_payload
from activity_testing.processes import RedisServer
from activity_testing.waiting import wait_until

from .conftest import ClientFactory

pytestmark = pytest.mark.integration

FALLBACK_METRIC = "event_tracker_ingest_rate_limit_fallback_total"
UNAVAILABLE = "redis unavailable"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


async def fallbacks(http: httpx.AsyncClient) -> float:
    """The app's count of decisions made in memory, as `/metrics` serves it."""
    text = (await http.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == FALLBACK_METRIC:
                return sample.value
    raise AssertionError(f"{FALLBACK_METRIC} is not served")


async def post(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post("/api/v1/activities", json=event_payload())


async def redis_check(http: httpx.AsyncClient) -> str:
    response = await http.get("/health/ready")
    assert response.status_code == 200
    state: str = response.json()["checks"]["redis"]
    return state


async def test_outage_falls_back_to_memory_then_returns_to_redis(
    client_for: ClientFactory, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ingest.shared_windows")
    async with client_for(redis_url=redis_server.url, rate_limit="4/minute") as http:
        before = await fallbacks(http)
        assert (await post(http)).status_code == 202
        assert await redis_check(http) == "up"
        assert await fallbacks(http) == before

        redis_server.stop()
        started = time.monotonic()
        during = [await post(http) for _ in range(5)]
        # Requests are not failed: the in-memory window applies the same 4/minute.
        assert [r.status_code for r in during] == [202, 202, 202, 202, 429]
        assert time.monotonic() - started < 10
        assert await fallbacks(http) - before >= 5
        assert await redis_check(http) == "degraded"
        assert len([r for r in caplog.records if UNAVAILABLE in r.getMessage()]) == 1

        redis_server.start()

        async def redis_up() -> bool:
            return await redis_check(http) == "up"

        assert await wait_until(redis_up, 15), "readiness never saw redis up again"
        # Back on the shared window (fresh: the restarted Redis kept nothing).
        counted = await fallbacks(http)
        response = await post(http)
        assert response.status_code == 202
        assert response.headers["RateLimit-Remaining"] == "3"
        assert await fallbacks(http) == counted
    assert any("available again" in r.getMessage() for r in caplog.records)


async def test_frozen_redis_costs_a_bounded_wait_not_an_error(
    client_for: ClientFactory, redis_server: RedisServer
) -> None:
    async with client_for(redis_url=redis_server.url, redis_timeout_seconds=0.3) as http:
        assert (await post(http)).status_code == 202
        redis_server.freeze()
        try:
            started = time.monotonic()
            responses = await asyncio.gather(*(post(http) for _ in range(2)))
            elapsed = time.monotonic() - started
            assert [r.status_code for r in responses] == [202, 202]
            assert elapsed < 5  # bounded by the 0.3 s timeout, with room for a busy machine
            assert await redis_check(http) == "degraded"
        finally:
            redis_server.thaw()


async def test_starts_and_accepts_while_redis_is_down(
    client_for: ClientFactory, redis_server: RedisServer
) -> None:
    redis_server.stop()
    async with client_for(redis_url=redis_server.url) as http:
        assert (await post(http)).status_code == 202
        assert await redis_check(http) == "degraded"
