"""Ingest under a root path: served with uvicorn's `--root-path` (a proxy strips the
prefix), or mounted under a prefix in another ASGI app. Its guards refuse as at the root."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette
from starlette.routing import Mount

from activity_testing.events import event_payload
from activity_testing.processes import free_port
from activity_testing.waiting import wait_until
from ingest.app import create_app
from ingest.settings import IngestSettings

from .conftest import PEER

pytestmark = pytest.mark.integration  # refusals are remembered from the shared limit (Redis)

PREFIX = "/ingest"
ACTIVITIES = "/api/v1/activities"
JSON = {"Content-Type": "application/json"}


@dataclass
class Deployment:
    """A client of ingest under `PREFIX`, and the path it requests a route by."""

    http: httpx.AsyncClient
    path_prefix: str

    def url(self, route: str) -> str:
        """Where the client sends a request for `route`."""
        return self.path_prefix + route


@pytest.fixture(params=["uvicorn-root-path", "mounted"])
async def deployment(
    request: pytest.FixtureRequest, settings_for: Callable[..., IngestSettings]
) -> AsyncIterator[Deployment]:
    """The real app under `PREFIX`, with a write limit of 2 requests a minute."""
    app = create_app(settings_for(rate_limit="2/minute"))
    if request.param == "mounted":
        outer = Starlette(routes=[Mount(PREFIX, app=app)])
        transport = httpx.ASGITransport(app=outer, client=(PEER, 40000))
        async with (
            LifespanManager(app),
            httpx.AsyncClient(transport=transport, base_url="http://ingest") as http,
        ):
            yield Deployment(http, path_prefix=PREFIX)
        return
    # uvicorn puts the root path in front of each request's path, as the proxy removed it.
    port = free_port()
    config = uvicorn.Config(app, port=port, log_config=None, root_path=PREFIX)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    assert await wait_until(lambda: server.started, 30, interval=0.01), "uvicorn did not start"
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield Deployment(http, path_prefix="")
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]


async def test_the_body_guard_and_the_edge_gate_refuse_under_a_root_path(
    deployment: Deployment,
) -> None:
    http, activities = deployment.http, deployment.url(ACTIVITIES)
    assert (await http.get(deployment.url("/health/live"))).status_code == 200

    # The body guard judges the headers: refused before the rate limit, not counted.
    text = await http.post(activities, content=b"not json", headers={"Content-Type": "text/plain"})
    assert error_of(text) == (415, "unsupported_media_type")
    big = json.dumps(event_payload(metadata={"pad": "x" * 70_000}))
    assert error_of(await http.post(activities, content=big, headers=JSON)) == (
        413,
        "payload_too_large",
    )

    # ... and bounds the body the route reads (counted: the limit came first).
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024

    streamed = await http.post(activities, content=chunks(), headers=JSON)
    assert error_of(streamed) == (413, "payload_too_large")

    assert (await http.post(activities, json=event_payload())).status_code == 202
    refused = await http.post(activities, json=event_payload())
    assert error_of(refused) == (429, "rate_limited")  # the limiter refuses, and remembers
    # The edge gate answers a refused client before the body guard, which would say 415.
    again = await http.post(activities, content=b"not json", headers={"Content-Type": "text/plain"})
    assert error_of(again) == (429, "rate_limited")
    assert "Retry-After" in again.headers

    await http.get(deployment.url("/metrics"))
    metrics = (await http.get(deployment.url("/metrics"))).text
    assert 'handler="/metrics"' not in metrics  # scrapes are not counted, as at the root
    assert (
        f'event_tracker_ingest_http_requests_total{{handler="{ACTIVITIES}",'
        'method="POST",status="429"} 2.0'
    ) in metrics
