"""What only ingest knows, as Prometheus metrics (design §11), on each app's own registry.

HTTP requests and latency are counted by `ingest.http.metrics`. Every name starts with
`event_tracker_ingest_`; no label carries a user id, a client address or an event id.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "event_tracker_ingest"
_GROUP_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
_SKEW_BUCKETS = (1, 10, 60, 600, 3600, 6 * 3600, 24 * 3600, 7 * 24 * 3600)


class IngestMetrics:
    """Publishing, rate limiting and client clocks, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Create every metric on `registry`."""
        self.registry = registry
        self.published = Counter(
            f"{PREFIX}_events_published", "Events confirmed by RabbitMQ.", registry=registry
        )
        self.publish_failures = Counter(
            f"{PREFIX}_publish_failures",
            "Events RabbitMQ did not confirm (answered 503), by error type.",
            ["error_type"],
            registry=registry,
        )
        self.queue_redeclarations = Counter(
            f"{PREFIX}_queue_redeclarations",
            "Declarations of both queues made again after the activity queue was found "
            "missing, by outcome (declared, failed).",
            ["outcome"],
            registry=registry,
        )
        self.events_per_message = Histogram(
            f"{PREFIX}_events_per_message",
            "Events carried by each published message (group commit and batches).",
            buckets=_GROUP_BUCKETS,
            registry=registry,
        )
        self.plan_violations = Counter(
            f"{PREFIX}_plan_violations",
            "Tracking-plan violations, by event type (`(unplanned)` for every type the "
            "plan does not list), rule and outcome (`refused`; `flagged`: accepted under "
            "warn; `refused_batch`: flagged, but another event refused its batch).",
            ["event_type", "rule", "outcome"],
            registry=registry,
        )
        self.rate_limited = Counter(
            f"{PREFIX}_rate_limited",
            "Requests refused with 429, by scope (write, read, admin).",
            ["scope"],
            registry=registry,
        )
        self.rate_limit_fallback = Counter(
            f"{PREFIX}_rate_limit_fallback",
            "Rate-limit decisions made by the per-process in-memory limiter because Redis failed.",
            registry=registry,
        )
        self.rate_limit_redis_up = Gauge(
            f"{PREFIX}_rate_limit_redis_up",
            "1 while the shared Redis rate limiter is used, 0 during an outage.",
            registry=registry,
        )
        self.rate_limit_redis_up.set(1)
        self.erasures = Counter(
            f"{PREFIX}_erasures", "Users erased (DELETE of their activity).", registry=registry
        )
        self.erased_events = Counter(
            f"{PREFIX}_erased_events", "Stored events deleted by erasures.", registry=registry
        )
        self.clock_skew = Histogram(
            f"{PREFIX}_client_clock_skew_seconds",
            "|sent_at - received_at| of events that carry sent_at: how wrong client clocks are.",
            buckets=_SKEW_BUCKETS,
            registry=registry,
        )
