"""HTTP metrics (SPEC §11): requests by route template, method and status, and latency."""

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.http.access_log import route_template

PREFIX = "event_tracker_ingest"
METRICS_PATH = "/metrics"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetricsMiddleware:
    """ASGI middleware counting and timing every request except `/metrics` itself.

    Label children are cached per (route, method, status): a lookup, not a label
    resolution, per request.
    """

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        """Wrap `app`, registering the metrics on `registry`."""
        self.app = app
        self.requests = Counter(
            f"{PREFIX}_http_requests",
            "HTTP requests by route template, method and status.",
            ["handler", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "HTTP request duration by route template and method.",
            ["handler", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, then count it."""
        if scope["type"] != "http" or scope["path"] == METRICS_PATH:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            key = (route_template(scope), scope["method"], status)
            children = self._children.get(key)
            if children is None:
                children = (
                    self.requests.labels(key[0], key[1], str(status)),
                    self.duration.labels(key[0], key[1]),
                )
                self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - started)
