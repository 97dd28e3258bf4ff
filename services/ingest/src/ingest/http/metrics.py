"""HTTP metrics (design §11): requests, latency, hang-ups, connections closed by the edge.

Requests by route template, method and status; connections closed before their request
was whole by `ingest.http.connections`, by reason.
"""

from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Histogram

PREFIX = "event_tracker_ingest"
METRICS_PATH = "/metrics"
# The status counted (and logged) for a request whose client hung up before its answer:
# nginx's "client closed request". No response is sent: nobody is there to read it.
CLIENT_CLOSED_REQUEST = 499
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Why the HTTP edge closed a connection before its request was whole (ingest.http.connections).
ClosureReason = Literal[
    "header_timeout", "body_timeout", "headers_too_large", "too_many_headers", "over_capacity"
]
CLOSURE_REASONS: tuple[ClosureReason, ...] = get_args(ClosureReason)


class HttpMetrics:
    """Requests by route template, method and status, and their duration.

    Label children are cached per (route, method, status): a lookup, not a label
    resolution, per request. Routes and methods are a closed set (unmatched paths share
    one template, and the HTTP parser knows only its methods).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        """Register the metrics on `registry`."""
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
        self.client_disconnects = Counter(
            f"{PREFIX}_client_disconnects",
            "Requests whose client hung up before the answer (counted with status 499).",
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.duration.labels(route, method),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class ConnectionMetrics:
    """Connections closed by the HTTP edge itself, by reason; every reason starts at 0."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Register the counter on `registry`."""
        self.closed = Counter(
            f"{PREFIX}_connections_closed",
            "Connections ingest closed before their request was whole, by reason "
            "(header_timeout, body_timeout, headers_too_large, too_many_headers, over_capacity).",
            ["reason"],
            registry=registry,
        )
        self._children = {reason: self.closed.labels(reason) for reason in CLOSURE_REASONS}

    def count_closed(self, reason: ClosureReason) -> None:
        """Count one connection closed for `reason`."""
        self._children[reason].inc()
