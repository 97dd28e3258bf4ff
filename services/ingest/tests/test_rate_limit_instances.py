"""Two ingest processes share one limit through Redis: exactly `limit` of a burst pass."""

import asyncio
import collections
from collections.abc import Iterator

import httpx
import pytest
import redis

from activity_testing.events import event_payload
from activity_testing.processes import ServiceProcess, free_port

from .conftest import REDIS_URL

pytestmark = pytest.mark.integration

LIMIT = 100
BURST = 200


@pytest.fixture
def two_ingests(
    rabbit_url: str, mongo_server_url: str, redis_key_prefix: str
) -> Iterator[list[ServiceProcess]]:
    services = []
    try:
        for _ in range(2):
            port = free_port()
            env = {
                "RABBITMQ_URL": rabbit_url,
                "MONGODB_URL": mongo_server_url,
                "REDIS_URL": REDIS_URL,
                "RATE_LIMIT": f"{LIMIT}/minute",
                "RATE_LIMIT_KEY_PREFIX": redis_key_prefix,
                # A loaded machine must not push any check into the in-memory fallback.
                "REDIS_TIMEOUT_SECONDS": "5",
                "INGEST_HOST": "127.0.0.1",
                "INGEST_PORT": str(port),
                "LOG_LEVEL": "WARNING",
            }
            services.append(ServiceProcess("ingest", env, port).start())
        yield services
    finally:
        for service in services:
            service.stop()


async def test_burst_across_two_instances_admits_exactly_the_limit(
    two_ingests: list[ServiceProcess], redis_key_prefix: str
) -> None:
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        for service in two_ingests:  # warm up: both connected to RabbitMQ and Redis
            ready = await http.get(f"{service.base_url}/health/ready")
            checks = ready.json()["checks"]
            assert checks["broker"] == checks["redis"] == "up"
        responses = await asyncio.gather(
            *(
                http.post(
                    f"{two_ingests[index % 2].base_url}/api/v1/activities",
                    json=event_payload(user_id=f"user-{index}"),
                )
                for index in range(BURST)
            )
        )
        statuses = collections.Counter(response.status_code for response in responses)
        assert statuses == {202: LIMIT, 429: BURST - LIMIT}
        # Each instance admitted part of it, and every admission is in the shared window:
        # none was decided by an in-memory fallback.
        for service in two_ingests:
            served = [r for r in responses if r.url.port == service.port]
            assert any(r.status_code == 202 for r in served)
            metrics = (await http.get(f"{service.base_url}/metrics")).text
            assert "event_tracker_ingest_rate_limit_fallback_total 0.0" in metrics
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert client.zcard(f"{redis_key_prefix}write:127.0.0.1") == LIMIT
    finally:
        client.close()
