"""The shared windows against a real Redis: one script call per loop iteration, Redis's
clock, exact verdicts, keys that expire."""

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from ingest.metrics import IngestMetrics
from ingest.rate_limit import SharedWindows
from ingest.settings import RateLimitRule

from .conftest import REDIS_URL

pytestmark = pytest.mark.integration


async def started(prefix: str) -> SharedWindows:
    windows = SharedWindows(REDIS_URL, prefix, 0.5, IngestMetrics(CollectorRegistry()))
    await windows.start()
    return windows


async def test_concurrent_checks_share_one_script_call_and_stay_exact(
    redis_key_prefix: str,
) -> None:
    windows = await started(redis_key_prefix)
    calls = 0
    script = windows._script
    assert script is not None

    async def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await script(*args, **kwargs)  # type: ignore[operator]

    windows._script = counting
    rule = RateLimitRule(limit=5, period_seconds=60)
    try:
        verdicts = await asyncio.gather(*(windows.check("write:a", rule) for _ in range(8)))
        others = await asyncio.gather(*(windows.check("write:b", rule) for _ in range(2)))
    finally:
        await windows.stop()
    assert calls == 2
    assert [v.allowed for v in verdicts if v] == [True] * 5 + [False] * 3
    assert [v.remaining for v in verdicts if v][:5] == [4, 3, 2, 1, 0]
    assert all(v is not None and v.allowed for v in others)
    refused = verdicts[-1]
    assert refused is not None
    assert 59 <= refused.retry_after_seconds <= 60
    assert 59_000 < refused.retry_after_ms <= 60_000


async def test_windows_use_redis_time_and_expire_when_idle(redis_key_prefix: str) -> None:
    windows = await started(redis_key_prefix)
    redis = Redis.from_url(REDIS_URL)
    try:
        await windows.check("write:c", RateLimitRule(limit=1, period_seconds=1))
        key = f"{redis_key_prefix}write:c"
        scores = [score for _, score in await redis.zrange(key, 0, -1, withscores=True)]  # type: ignore[str-unpack]
        [score] = scores
        seconds, micros = await redis.time()
        redis_ms = int(seconds) * 1000 + int(micros) // 1000
        assert abs(float(score) - redis_ms) < 2000  # scored by Redis's own clock
        assert 0 < await redis.pttl(key) <= 1000
    finally:
        await redis.aclose()
        await windows.stop()


async def test_the_script_is_reloaded_after_a_redis_restart(redis_key_prefix: str) -> None:
    windows = await started(redis_key_prefix)
    try:
        windows._script.sha = "0" * 40  # type: ignore[attr-defined]  # as after a restart: NOSCRIPT
        verdict = await windows.check("write:d", RateLimitRule(limit=2, period_seconds=60))
    finally:
        await windows.stop()
    assert verdict is not None
    assert verdict.allowed
