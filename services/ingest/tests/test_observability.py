"""Ingest metrics, access log lines and readiness, after known traffic (real RabbitMQ)."""

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from activity_contract.topology import ACTIVITY_QUEUE
from activity_testing.events import event_payload
from activity_testing.rabbitmq import rabbitmqctl

pytestmark = pytest.mark.integration

BuildApp = Callable[..., Awaitable[tuple[FastAPI, httpx.AsyncClient]]]


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of `/metrics` by name and labels."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


async def test_metrics_count_known_traffic(build_app: BuildApp, rabbit_url: str) -> None:
    _, client = await build_app(read_api_keys=["k"], mongodb_url=None)
    for _ in range(2):
        assert (await client.post("/api/v1/activities", json=event_payload())).status_code == 202
    batch = {"events": [event_payload() for _ in range(3)]}
    assert (await client.post("/api/v1/activities/batch", json=batch)).status_code == 202
    assert (await client.post("/api/v1/activities", json={"user_id": ""})).status_code == 422
    secret_user = "user-secret-4711"
    read = f"/api/v1/users/{secret_user}/activities"
    assert (await client.get(read)).status_code == 401
    await client.get("/metrics")

    # With the queue gone, a publish is unroutable: 503 and a counted failure.
    rabbitmqctl("delete_queue", "-p", urlsplit(rabbit_url).path.lstrip("/"), ACTIVITY_QUEUE)
    assert (await client.post("/api/v1/activities", json=event_payload())).status_code == 503

    samples = await scrape(client)
    text = (await client.get("/metrics")).text

    assert samples[("event_tracker_ingest_events_published_total", labels())] == 5
    failures = [
        value
        for (name, _), value in samples.items()
        if name == "event_tracker_ingest_publish_failures_total"
    ]
    assert sum(failures) == 1
    assert samples[("event_tracker_ingest_rate_limited_total", labels(scope="write"))] == 0
    assert ("event_tracker_ingest_rate_limit_redis_up", labels()) in samples
    requests = "event_tracker_ingest_http_requests_total"
    single = "/api/v1/activities"
    assert samples[(requests, labels(handler=single, method="POST", status="202"))] == 2
    assert samples[(requests, labels(handler=single, method="POST", status="422"))] == 1
    assert samples[(requests, labels(handler=single, method="POST", status="503"))] == 1
    batch_route = "/api/v1/activities/batch"
    assert samples[(requests, labels(handler=batch_route, method="POST", status="202"))] == 1
    read_route = "/api/v1/users/{user_id:anything}/activities"  # an id may contain `/`
    assert samples[(requests, labels(handler=read_route, method="GET", status="401"))] == 1
    latency = "event_tracker_ingest_http_request_duration_seconds_count"
    assert samples[(latency, labels(handler=single, method="POST"))] == 4
    # /metrics itself is not counted, and no label carries a user id.
    assert not any(dict(pairs).get("handler") == "/metrics" for _, pairs in samples)
    assert secret_user not in text


async def test_metrics_are_not_in_the_openapi_schema(build_app: BuildApp) -> None:
    _, client = await build_app()
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/metrics" not in paths
    assert "/api/v1/users/{user_id}/activities" in paths


async def test_two_apps_in_one_process_count_separately(build_app: BuildApp) -> None:
    _, first = await build_app()
    _, second = await build_app()
    assert (await first.post("/api/v1/activities", json=event_payload())).status_code == 202
    assert (await scrape(first))[("event_tracker_ingest_events_published_total", labels())] == 1
    assert (await scrape(second))[("event_tracker_ingest_events_published_total", labels())] == 0


async def test_access_log_line_per_request(
    build_app: BuildApp, caplog: pytest.LogCaptureFixture
) -> None:
    _, client = await build_app(read_api_keys=["k"], mongodb_url=None)
    caplog.set_level(logging.INFO, logger="ingest.access")
    response = await client.post(
        "/api/v1/activities", json=event_payload(), headers={"X-Request-ID": "req-abc.1"}
    )
    assert response.headers["X-Request-ID"] == "req-abc.1"
    await client.get("/api/v1/users/someone-private/activities")

    lines = [record for record in caplog.records if record.name == "ingest.access"]
    assert len(lines) == 2
    posted, read = lines
    assert posted.levelno == logging.INFO
    assert posted.__dict__["method"] == "POST"
    assert posted.__dict__["route"] == "/api/v1/activities"
    assert posted.__dict__["status"] == 202
    assert posted.__dict__["request_id"] == "req-abc.1"
    assert isinstance(posted.__dict__["duration_ms"], float)
    assert read.__dict__["route"] == "/api/v1/users/{user_id:anything}/activities"
    assert read.__dict__["status"] == 401
    assert len(read.__dict__["request_id"]) == 32  # generated
    assert "someone-private" not in caplog.text


async def test_readiness_is_503_without_the_broker(build_app: BuildApp, rabbit_url: str) -> None:
    app, client = await build_app(mongodb_url=None)
    await app.state.publisher.stop()
    response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {
            "broker": "down",
            "queue": "unknown",
            "redis": "up",
            "mongodb": "not_configured",
        },
    }
