"""The Redis window script against a real Redis."""

from inspect import isawaitable

import pytest
from pyrate_limiter import Rate, RateItem
from redis.asyncio import Redis

from ingest.rate_limit_windows import WINDOW_SCRIPT, RedisWindowBucket

from .conftest import REDIS_URL

pytestmark = pytest.mark.integration

T0 = 1_800_000_000_000


async def put(bucket: RedisWindowBucket, item: RateItem) -> bool:
    admitted = bucket.put(item)
    return await admitted if isawaitable(admitted) else admitted


async def test_entries_stamped_ahead_by_another_instance_still_count(
    redis_key_prefix: str,
) -> None:
    # pyrate-limiter's stock script counts up to the caller's `now` only and admits both
    # of these (checked against 4.5.1): two instances with clocks 5 ms apart exceed a limit.
    redis = Redis.from_url(REDIS_URL)
    try:
        script = redis.register_script(WINDOW_SCRIPT)
        key = f"{redis_key_prefix}skew"
        ahead = RedisWindowBucket(Rate(1, 60_000), redis, key, script)
        behind = RedisWindowBucket(Rate(1, 60_000), redis, key, script)
        assert await put(ahead, RateItem("client", T0 + 5)) is True
        assert await put(behind, RateItem("client", T0)) is False
        assert behind.window is not None
        assert behind.window.blocking_ms == T0 + 5
        assert 0 < await redis.pttl(key) <= 60_000  # idle windows expire by themselves
    finally:
        await redis.aclose()


async def test_restarted_script_cache_is_reloaded(redis_key_prefix: str) -> None:
    redis = Redis.from_url(REDIS_URL)
    try:
        script = redis.register_script(WINDOW_SCRIPT)
        script.sha = "0" * 40  # as after a Redis restart: NOSCRIPT, then reload
        bucket = RedisWindowBucket(Rate(2, 60_000), redis, f"{redis_key_prefix}reload", script)
        assert await put(bucket, RateItem("client", T0)) is True
    finally:
        await redis.aclose()
