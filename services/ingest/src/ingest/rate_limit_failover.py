"""Fail-open routing of rate-limit checks: Redis when it answers in time, memory otherwise.

Every ingest instance shares the Redis windows, so the limit holds across instances.
When Redis fails or is slow, the same rule is applied per process in memory until Redis
answers again (SPEC §8); each outage is logged once and counted in metrics.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from inspect import isawaitable

from pyrate_limiter import AbstractBucket, BucketFactory, Rate, RateItem
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from ingest.metrics import RATE_LIMIT_FALLBACK, RATE_LIMIT_REDIS_UP
from ingest.rate_limit_windows import (
    WINDOW_SCRIPT,
    MemoryWindows,
    RedisWindowBucket,
    Verdict,
    wall_clock_ms,
)

logger = logging.getLogger(__name__)

# Failures of the shared store that make us fall back instead of failing the request.
REDIS_FAILURES = (RedisError, OSError, TimeoutError)
# During an outage, Redis is tried again at most this often (one request probes).
REDIS_RETRY_SECONDS = 1.0

_current_verdict: ContextVar[Verdict | None] = ContextVar("rate_limit_verdict", default=None)


def current_verdict() -> Verdict | None:
    """The verdict of the last rate-limit check made by this request's task."""
    return _current_verdict.get()


class RedisHealth:
    """Whether the shared limiter is usable; one warning per outage, retried by itself."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """Start healthy."""
        self._clock = clock
        self.degraded = False
        self._retry_at = 0.0
        RATE_LIMIT_REDIS_UP.set(1)

    def should_try(self) -> bool:
        """Whether this request should use Redis (during an outage: one probe per interval)."""
        if not self.degraded:
            return True
        now = self._clock()
        if now < self._retry_at:
            return False
        self._retry_at = now + REDIS_RETRY_SECONDS
        return True

    def record_failure(self, error: BaseException) -> None:
        """Enter (or stay in) an outage; only its first failure is logged."""
        self._retry_at = self._clock() + REDIS_RETRY_SECONDS
        if self.degraded:
            return
        self.degraded = True
        RATE_LIMIT_REDIS_UP.set(0)
        logger.warning(
            "redis unavailable: rate limiting per process in memory until it answers",
            extra={"error_type": type(error).__name__},
        )

    def record_success(self) -> None:
        """Leave an outage."""
        if not self.degraded:
            return
        self.degraded = False
        RATE_LIMIT_REDIS_UP.set(1)
        logger.warning("redis available again: rate limiting shared through redis")


class FailoverBucket(AbstractBucket):
    """One client's bucket: the Redis window when it answers in time, memory otherwise."""

    is_async = True

    def __init__(self, factory: "ClientBucketFactory", key: str) -> None:
        """Route `key` through `factory`'s Redis client, health and fallback."""
        self._factory = factory
        self._key = key
        self.rates = [factory.rate]

    async def put(self, item: RateItem) -> bool:
        """Admit `item` if the client's window has room; record the verdict for the request."""
        factory = self._factory
        verdict = await factory.check_shared(self._key, item)
        if verdict is None:
            RATE_LIMIT_FALLBACK.inc()
            window = factory.memory.check(self._key, item)
            verdict = Verdict.from_window(factory.rate, item.timestamp, window, shared=False)
        _current_verdict.set(verdict)
        self.failing_rate = None if verdict.allowed else factory.rate
        return verdict.allowed

    def leak(self, current_timestamp: int | None = None) -> int:
        """Nothing to trim: the script expires Redis entries, the fallback trims on use."""
        return 0

    def flush(self) -> None:
        """Nothing is held by this per-request view."""

    def count(self) -> int:
        """Not tracked here; see the verdict."""
        return 0

    def peek(self, index: int) -> RateItem | None:
        """Not tracked here; see the verdict."""
        return None


class ClientBucketFactory(BucketFactory):
    """Routes each client key to its own window (pyrate-limiter's per-key extension point).

    A plain `Limiter(rate)` would share one bucket between every client.
    """

    def __init__(self, rate: Rate, key_prefix: str, redis_timeout_seconds: float) -> None:
        """Apply `rate` per key, under `key_prefix` in Redis, bounding each round trip."""
        self.rate = rate
        self.key_prefix = key_prefix
        self.redis_timeout_seconds = redis_timeout_seconds
        self.memory = MemoryWindows(rate)
        self.health = RedisHealth()
        self.redis: Redis | None = None
        self._script: AsyncScript | None = None

    def attach(self, redis: Redis | None) -> None:
        """Use `redis` from now on (None: memory only, e.g. before start-up)."""
        self.redis = redis
        self._script = redis.register_script(WINDOW_SCRIPT) if redis is not None else None

    def wrap_item(self, name: str, weight: int = 1) -> RateItem:
        """Stamp the request with the shared wall clock."""
        return RateItem(name, wall_clock_ms(), weight=weight)

    def get(self, item: RateItem) -> AbstractBucket:
        """A fresh, cheap per-request view of the client's window; nothing kept per client."""
        return FailoverBucket(self, item.name)

    async def check_shared(self, key: str, item: RateItem) -> Verdict | None:
        """The Redis verdict, or None when Redis failed or is skipped during an outage."""
        if self.redis is None or self._script is None or not self.health.should_try():
            return None
        bucket = RedisWindowBucket(self.rate, self.redis, self.key_prefix + key, self._script)
        try:
            async with asyncio.timeout(self.redis_timeout_seconds):
                admitted = bucket.put(item)
                if isawaitable(admitted):
                    await admitted
        except REDIS_FAILURES as error:
            self.health.record_failure(error)
            return None
        self.health.record_success()
        assert bucket.window is not None  # noqa: S101 - set by every completed put
        return Verdict.from_window(self.rate, item.timestamp, bucket.window, shared=True)

    async def ping(self) -> bool:
        """Whether Redis answers within the timeout; updates the health either way."""
        if self.redis is None:
            return False
        try:
            async with asyncio.timeout(self.redis_timeout_seconds):
                await self.redis.ping()
        except REDIS_FAILURES as error:
            self.health.record_failure(error)
            return False
        self.health.record_success()
        return True
