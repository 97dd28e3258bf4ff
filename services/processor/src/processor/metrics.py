"""Prometheus metrics of the processor (design §11), on a registry of each app's own.

Counted per message and per bulk write, not per event where it can be helped (the consume
path is hot). No label carries an id.
"""

from prometheus_client import CollectorRegistry, Counter, Histogram

PREFIX = "event_tracker_processor"

_BULK_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class ProcessorMetrics:
    """The processor's own counters and histograms, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Create every metric on `registry`."""
        self.registry = registry
        self.persisted = Counter(
            f"{PREFIX}_events_persisted",
            "Events written to MongoDB for the first time.",
            registry=registry,
        )
        self.duplicates = Counter(
            f"{PREFIX}_events_duplicate",
            "Events already stored (redelivered or re-sent); acknowledged as success.",
            registry=registry,
        )
        self.dead_lettered = Counter(
            f"{PREFIX}_events_dead_lettered",
            "Messages or events sent to the dead-letter queue, by reason.",
            ["reason"],
            registry=registry,
        )
        self.plan_violations = Counter(
            f"{PREFIX}_plan_violations",
            "Tracking-plan violations found again by the processor, by event type "
            "(`(unplanned)` for every type the plan does not list), rule and outcome "
            "(`flagged`: stored with the event; `dead_lettered`).",
            ["event_type", "rule", "outcome"],
            registry=registry,
        )
        self.messages = Counter(
            f"{PREFIX}_messages_consumed",
            "Messages taken from the queue, by kind (`activity`, `activity_group`).",
            ["kind"],
            registry=registry,
        )
        self.consumed = Counter(
            f"{PREFIX}_events_consumed",
            "Events taken from the queue (a group message counts each of its events).",
            registry=registry,
        )
        self.conflicts = Counter(
            f"{PREFIX}_events_conflicting",
            "Events whose id was already stored with other content (the first one stays).",
            registry=registry,
        )
        self.erased = Counter(
            f"{PREFIX}_events_erased",
            "Events of erased users dropped after their bulk write (received before the "
            "erasure, still queued when it happened).",
            registry=registry,
        )
        self.retried = Counter(
            f"{PREFIX}_events_retried",
            "Messages requeued for another delivery after a failure.",
            registry=registry,
        )
        self.bulk_write_size = Histogram(
            f"{PREFIX}_bulk_write_size",
            "Documents per bulk insert attempt.",
            buckets=_BULK_SIZE_BUCKETS,
            registry=registry,
        )
        self.bulk_write_failures = Counter(
            f"{PREFIX}_bulk_write_failures",
            "Bulk insert attempts that failed for want of the database (retried with backoff).",
            registry=registry,
        )
        self.bulk_write_duration = Histogram(
            f"{PREFIX}_bulk_write_duration_seconds",
            "Duration of one bulk insert attempt, including its durable write concern.",
            registry=registry,
        )
        self.end_to_end_latency = Histogram(
            f"{PREFIX}_end_to_end_latency_seconds",
            "processed_at - received_at of each newly stored event.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
