"""Prometheus metrics of the ingest service (SPEC §11), served per app from its registry.

HTTP requests by route and status, with latency histograms, come from
prometheus-fastapi-instrumentator; this module adds what only ingest knows. Every name
starts with `event_tracker_ingest_`; no label carries a user id or an event id.
"""

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_fastapi_instrumentator import Instrumentator

PREFIX = "event_tracker_ingest"
METRICS_PATH = "/metrics"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Rate limiting (SPEC §8). The rate-limit modules count here directly: these describe the
# process (its Redis connection, its in-memory fallback), so they are defined once per
# process, on no registry, and every app's registry also serves them.
RATE_LIMITED = Counter(
    f"{PREFIX}_rate_limited_total",
    "Requests refused with 429 because the client IP was over its limit.",
    registry=None,
)
RATE_LIMIT_FALLBACK = Counter(
    f"{PREFIX}_rate_limit_fallback_total",
    "Rate-limit decisions made by the per-process in-memory limiter because Redis failed.",
    registry=None,
)
RATE_LIMIT_REDIS_UP = Gauge(
    f"{PREFIX}_rate_limit_redis_up",
    "1 while the shared Redis rate limiter is used, 0 during an outage (in-memory fallback).",
    registry=None,
)
_PROCESS_WIDE = (RATE_LIMITED, RATE_LIMIT_FALLBACK, RATE_LIMIT_REDIS_UP)


class IngestMetrics:
    """Ingest's own metrics on `registry`, plus the process-wide rate-limit ones."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Create the per-app metrics on `registry` and register the process-wide ones."""
        self.registry = registry
        for collector in _PROCESS_WIDE:
            registry.register(collector)
        self.published = Counter(
            f"{PREFIX}_events_published",
            "Events confirmed by RabbitMQ.",
            registry=registry,
        )
        self.publish_failures = Counter(
            f"{PREFIX}_publish_failures",
            "Events RabbitMQ did not confirm (answered 503), by error type.",
            ["error_type"],
            registry=registry,
        )


def instrument_http(app: FastAPI, registry: CollectorRegistry) -> None:
    """Count and time every HTTP request by route template and status; serve `/metrics`."""
    Instrumentator(
        should_group_status_codes=False,
        excluded_handlers=[f"^{METRICS_PATH}$"],
        registry=registry,
    ).instrument(
        app,
        metric_namespace="event_tracker",
        metric_subsystem="ingest",
        latency_lowr_buckets=_LATENCY_BUCKETS,
    ).expose(app, endpoint=METRICS_PATH, include_in_schema=False)
