"""Prometheus metrics of the ingest service (SPEC §11), defined once per process."""

from prometheus_client import Counter, Gauge

# Rate limiting (SPEC §8).
RATE_LIMITED = Counter(
    "event_tracker_ingest_rate_limited_total",
    "Requests refused with 429 because the client IP was over its limit.",
)
RATE_LIMIT_FALLBACK = Counter(
    "event_tracker_ingest_rate_limit_fallback_total",
    "Rate-limit decisions made by the per-process in-memory limiter because Redis failed.",
)
RATE_LIMIT_REDIS_UP = Gauge(
    "event_tracker_ingest_rate_limit_redis_up",
    "1 while the shared Redis rate limiter is used, 0 during an outage (in-memory fallback).",
)
