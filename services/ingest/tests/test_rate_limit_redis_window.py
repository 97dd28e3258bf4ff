"""The shared windows against a real Redis: one key per script call, Redis's clock, exact
verdicts, keys that expire."""

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from ingest.metrics import IngestMetrics
from ingest.settings import RateLimitRule
from ingest.shared_windows import SharedWindows

from .conftest import REDIS_URL

pytestmark = pytest.mark.integration


async def started(prefix: str) -> SharedWindows:
    windows = SharedWindows(REDIS_URL, prefix, 0.5, IngestMetrics(CollectorRegistry()))
    await windows.start()
    return windows


async def test_one_loop_iterations_checks_travel_in_one_pipeline_and_stay_exact(
    redis_key_prefix: str,
) -> None:
    """One pipeline per loop iteration, of single-key calls (Redis Cluster routes each)."""
    windows = await started(redis_key_prefix)
    pipelines: list[list[str]] = []
    run_script = windows._run_script

    async def recording(calls: list[tuple[str, int, int, str]]) -> list[object]:
        pipelines.append([key for key, *_ in calls])
        return await run_script(calls)

    windows._run_script = recording  # type: ignore[method-assign]
    rule = RateLimitRule(limit=5, period_seconds=60)
    try:
        replies = await asyncio.gather(*(windows.check("write:a", rule) for _ in range(8)))
        others = await asyncio.gather(*(windows.check("write:b", rule) for _ in range(2)))
    finally:
        await windows.stop()
    assert pipelines == [[f"{redis_key_prefix}write:a"] * 8, [f"{redis_key_prefix}write:b"] * 2]
    assert all(r is not None and r.admitted for r in others)
    admitted = sorted(r.entries for r in replies if r and r.admitted)
    refused = [r for r in replies if r and not r.admitted]
    assert (admitted, len(refused)) == ([1, 2, 3, 4, 5], 3)
    for reply in refused:
        assert reply.entries == 5
        assert 59_000 < reply.retry_ms <= 60_000
        assert 59_000 < reply.reset_ms <= 60_000


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
        windows._script_sha = "0" * 40  # as after a restart: NOSCRIPT
        verdict = await windows.check("write:d", RateLimitRule(limit=2, period_seconds=60))
    finally:
        await windows.stop()
    assert verdict is not None
    assert verdict.admitted
