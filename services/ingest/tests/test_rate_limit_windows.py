"""The rate limiter's local parts: the in-memory fallback, cheap refusals, aggregated logs."""

import logging

import pytest
from prometheus_client import CollectorRegistry

from ingest.local_windows import LocalWindows
from ingest.metrics import IngestMetrics
from ingest.rate_limit import RecentRefusals, RefusalLog, Verdict
from ingest.settings import RateLimitRule
from ingest.shared_windows import SharedWindows, WindowReply

MINUTE = RateLimitRule(limit=3, period_seconds=60)


class Clock:
    """Milliseconds that a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def test_fallback_admits_the_limit_then_refuses_until_a_slot_frees() -> None:
    clock = Clock()
    windows = LocalWindows(MINUTE, clock=clock)
    verdicts = []
    for _ in range(4):
        verdicts.append(windows.check("a"))
        clock.now += 1000
    assert [v.admitted for v in verdicts] == [True, True, True, False]
    assert [v.entries for v in verdicts] == [1, 2, 3, 3]
    # The first request leaves the window 60 s after it was made: 57 s after the 4th.
    assert verdicts[3].retry_ms == 57_000
    assert verdicts[3].reset_ms == 57_000
    clock.now = 1_000_000 + 60_000 - 1
    assert not windows.check("a").admitted
    clock.now = 1_000_000 + 60_000
    assert windows.check("a").admitted


def test_fallback_windows_are_per_client() -> None:
    windows = LocalWindows(RateLimitRule(limit=1, period_seconds=60), clock=Clock())
    assert windows.check("a").admitted
    assert not windows.check("a").admitted
    assert windows.check("b").admitted


def test_fallback_memory_is_bounded_by_stored_entries_not_by_clients() -> None:
    """A generous limit must not let an outage store limit x clients entries."""
    clock = Clock()
    windows = LocalWindows(
        RateLimitRule(limit=1000, period_seconds=60), max_entries=50, clock=clock
    )
    for request in range(400):  # 20 clients x 20 requests, all within the window
        windows.check(f"client-{request % 20}")
        clock.now += 1
    assert windows.entries <= 50
    assert sum(bucket.count() for bucket in windows.buckets.values()) <= 50
    assert len(windows.buckets) <= 50


def test_verdict_headers() -> None:
    admitted = Verdict.of(100, WindowReply(True, 2, reset_ms=49_500, retry_ms=0))
    assert admitted.headers() == {
        "RateLimit-Limit": "100",
        "RateLimit-Remaining": "98",
        "RateLimit-Reset": "50",
    }
    refused = Verdict.of(100, WindowReply(False, 100, reset_ms=30_000, retry_ms=1_200))
    assert refused.headers()["Retry-After"] == "2"
    assert refused.retry_after_ms == 1_200


def test_a_refused_client_is_refused_locally_until_its_retry_time() -> None:
    refusals = RecentRefusals()
    refused = Verdict.of(3, WindowReply(False, 3, reset_ms=20_000, retry_ms=1_500))
    refusals.remember("write:203.0.113.5", refused, now=100.0)
    local = refusals.verdict("write:203.0.113.5", now=100.4)
    assert local is not None
    assert not local.allowed
    assert local.retry_after_seconds == 2  # ceil(1.1)
    assert local.headers()["RateLimit-Remaining"] == "0"
    assert refusals.verdict("write:203.0.113.6", now=100.4) is None  # other clients: Redis
    assert refusals.verdict("write:203.0.113.5", now=101.5) is None  # then Redis decides


def test_recent_refusals_stay_bounded() -> None:
    refusals = RecentRefusals(max_clients=10)
    refused = Verdict.of(3, WindowReply(False, 3, reset_ms=20_000, retry_ms=60_000))
    for client in range(100):
        refusals.remember(f"c{client}", refused, now=float(client))
    assert len(refusals._until) <= 10


def test_refusals_are_logged_aggregated_not_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = RefusalLog("write", interval=10.0)
    with caplog.at_level(logging.INFO, logger="ingest.rate_limit"):
        for request in range(1000):
            log.note(f"client-{request % 3}", now=100.0 + request / 1000)
        log.note("client-0", now=111.0)
    lines = [r for r in caplog.records if r.getMessage() == "rate limited"]
    assert len(lines) == 2
    assert (lines[1].__dict__["refused"], lines[1].__dict__["clients"]) == (1000, 3)


def test_an_outage_is_logged_once_and_probed_at_intervals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = IngestMetrics(CollectorRegistry())
    shared = SharedWindows("redis://unused", "p:", 0.1, metrics)
    with caplog.at_level(logging.WARNING, logger="ingest.shared_windows"):
        for _ in range(5):
            shared._record_failure(ConnectionError("refused"))
        assert not shared._should_try()
        shared._retry_at = 0.0  # the retry interval has passed
        assert shared._should_try()  # one probe ...
        assert not shared._should_try()  # ... the others keep using memory
        shared._record_success()
        assert shared._should_try()
        shared._record_failure(ConnectionError("again"))
    unavailable = [r for r in caplog.records if "unavailable" in r.getMessage()]
    recovered = [r for r in caplog.records if "available again" in r.getMessage()]
    assert (len(unavailable), len(recovered)) == (2, 1)
    assert metrics.registry.get_sample_value("event_tracker_ingest_rate_limit_redis_up") == 0
