"""Prometheus metrics of the ingest service (SPEC §11), on a registry of each app's own.

HTTP requests by route and status, with latency histograms, come from
prometheus-fastapi-instrumentator; this module adds what only ingest knows. Every name
starts with `event_tracker_ingest_`; no label carries a user id or an event id.
"""

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter
from prometheus_fastapi_instrumentator import Instrumentator

PREFIX = "event_tracker_ingest"
METRICS_PATH = "/metrics"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class IngestMetrics:
    """Ingest's own counters, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Create every metric on `registry`."""
        self.registry = registry
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
        self.rate_limited = Counter(
            f"{PREFIX}_rate_limited",
            "Requests refused with 429 by the per-IP rate limit.",
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
