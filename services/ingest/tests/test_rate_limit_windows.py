import logging

import pytest
from pyrate_limiter import Limiter, Rate, RateItem

from ingest.rate_limit_failover import ClientBucketFactory, RedisHealth, current_verdict
from ingest.rate_limit_windows import MemoryWindows, Verdict, WindowCount

MINUTE_MS = 60_000
T0 = 1_800_000_000_000


def test_memory_window_admits_the_limit_then_refuses_until_a_slot_frees() -> None:
    windows = MemoryWindows(Rate(3, MINUTE_MS))
    results = [windows.check("a", RateItem("a", T0 + i * 1000)) for i in range(4)]
    assert [result.admitted for result in results] == [True, True, True, False]
    assert results[2].count == 3
    refused = Verdict.from_window(Rate(3, MINUTE_MS), T0 + 3000, results[3], shared=False)
    # The first request (at T0) leaves the window at T0 + 60 s, 57 s from now.
    assert refused.retry_after_seconds == 57
    assert refused.remaining == 0
    # Exactly when it leaves, a slot is free; a millisecond earlier it is not.
    assert not windows.check("a", RateItem("a", T0 + MINUTE_MS - 1)).admitted
    assert windows.check("a", RateItem("a", T0 + MINUTE_MS)).admitted


def test_memory_windows_are_per_client() -> None:
    windows = MemoryWindows(Rate(1, MINUTE_MS))
    assert windows.check("a", RateItem("a", T0)).admitted
    assert not windows.check("a", RateItem("a", T0 + 1)).admitted
    assert windows.check("b", RateItem("b", T0 + 2)).admitted


def test_memory_windows_forget_idle_clients_and_stay_bounded() -> None:
    windows = MemoryWindows(Rate(5, MINUTE_MS), max_clients=3)
    for index in range(10):
        windows.check(f"client-{index}", RateItem(f"client-{index}", T0 + index))
    assert len(windows) == 3
    windows.check("late", RateItem("late", T0 + 2 * MINUTE_MS))
    assert len(windows) == 1


def test_verdict_headers_of_an_admitted_request() -> None:
    window = WindowCount(admitted=True, count=2, oldest_ms=T0, blocking_ms=None)
    verdict = Verdict.from_window(Rate(100, MINUTE_MS), T0 + 10_500, window, shared=True)
    assert (verdict.allowed, verdict.limit, verdict.remaining) == (True, 100, 98)
    assert verdict.reset_seconds == 50  # ceil(49.5)
    assert verdict.retry_after_seconds == 0


def test_redis_health_warns_once_per_outage_and_probes_at_intervals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    health = RedisHealth(clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="ingest.rate_limit_failover"):
        for _ in range(5):
            health.record_failure(ConnectionError("refused"))
        assert not health.should_try()
        now[0] += 1.5
        assert health.should_try()  # one probe ...
        assert not health.should_try()  # ... and the others keep using memory
        health.record_success()
        assert health.should_try()
        health.record_failure(ConnectionError("again"))
    unavailable = [r for r in caplog.records if "unavailable" in r.getMessage()]
    recovered = [r for r in caplog.records if "available again" in r.getMessage()]
    assert len(unavailable) == 2  # one per outage, not per failure
    assert len(recovered) == 1


async def test_limiter_without_redis_uses_the_memory_window_per_key() -> None:
    factory = ClientBucketFactory(Rate(2, MINUTE_MS), "unused:", redis_timeout_seconds=0.1)
    limiter = Limiter(factory)
    outcomes = []
    for key in ["a", "a", "a", "b"]:
        acquired = limiter.try_acquire(key, blocking=False)
        assert not isinstance(acquired, bool)
        outcomes.append(await acquired)
        verdict = current_verdict()
        assert verdict is not None
        assert not verdict.shared
    assert outcomes == [True, True, False, True]
