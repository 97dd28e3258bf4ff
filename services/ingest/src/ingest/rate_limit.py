"""Per-client-IP rate limiting of the ingest endpoints with fastapi-limiter (SPEC §8)."""

import logging
from inspect import isawaitable
from typing import Annotated, NoReturn

from fastapi import Depends, Request, Response
from fastapi_limiter.depends import RateLimiter
from pyrate_limiter import Limiter, Rate
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ingest.client_ip import ClientIdentity
from ingest.errors import RateLimitedError
from ingest.metrics import RATE_LIMITED
from ingest.rate_limit_failover import ClientBucketFactory, current_verdict
from ingest.rate_limit_windows import Verdict
from ingest.settings import IngestSettings

logger = logging.getLogger(__name__)

# Connections per process: enough for hundreds of concurrent checks of ~1 ms each; a
# request that cannot get one within the timeout falls back like any other failure.
REDIS_MAX_CONNECTIONS = 32
# One budget per client IP for every ingest endpoint, so splitting traffic between
# /activities and /activities/batch does not double it.
INGEST_SCOPE = "ingest"


def rate_limit_headers(verdict: Verdict) -> dict[str, str]:
    """The `RateLimit-*` headers (IETF draft) describing `verdict`."""
    return {
        "RateLimit-Limit": str(verdict.limit),
        "RateLimit-Remaining": str(verdict.remaining),
        "RateLimit-Reset": str(verdict.reset_seconds),
    }


async def refuse(request: Request, _: Response) -> NoReturn:
    """fastapi-limiter callback: answer 429 with `Retry-After` (when a slot frees up)."""
    verdict: Verdict = request.state.rate_limit
    RATE_LIMITED.inc()
    raise RateLimitedError(
        verdict.retry_after_seconds,
        headers=rate_limit_headers(verdict),
    )


class IngestRateLimiter(RateLimiter):
    """fastapi-limiter's dependency, keyed by client IP, fail-open when Redis is down.

    The base `__call__` walks `request.app.routes` to build a per-route key, which fails
    with routers included in a current FastAPI; this one keys by scope and client IP.
    """

    def __init__(self, settings: IngestSettings) -> None:
        """Build the limiter for `RATE_LIMIT`; Redis is attached at start-up."""
        rule = settings.rate_limit
        self.buckets = ClientBucketFactory(
            Rate(rule.limit, rule.period_seconds * 1000),
            key_prefix=settings.rate_limit_key_prefix,
            redis_timeout_seconds=settings.redis_timeout_seconds,
        )
        self.identity = ClientIdentity(settings.trusted_proxies)
        self._redis_url = settings.redis_url
        self._redis_timeout = settings.redis_timeout_seconds
        self.redis: Redis | None = None
        super().__init__(
            limiter=Limiter(self.buckets),
            identifier=self.identity,
            callback=refuse,
            blocking=False,
        )

    async def start(self) -> None:
        """Create the Redis client; an unreachable Redis only degrades (fail-open)."""
        # Deliberate bounds: no retries (the next request or probe is the retry) and
        # socket timeouts of one round-trip budget, instead of redis-py's 10 retries
        # and 5 s timeouts.
        pool = BlockingConnectionPool.from_url(
            self._redis_url,
            max_connections=REDIS_MAX_CONNECTIONS,
            timeout=self._redis_timeout,
            socket_timeout=self._redis_timeout,
            socket_connect_timeout=self._redis_timeout,
            retry=Retry(NoBackoff(), retries=0),
            health_check_interval=0,
        )
        self.redis = Redis.from_pool(pool)
        self.buckets.attach(self.redis)
        await self.buckets.ping()

    async def stop(self) -> None:
        """Close the Redis client and its pool."""
        self.buckets.attach(None)
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None

    async def redis_state(self) -> bool:
        """Whether the shared limiter works right now (False: in-memory fallback)."""
        return await self.buckets.ping()

    async def __call__(self, request: Request, response: Response) -> None:
        """Count the request against its client IP; 429 over the limit, headers otherwise."""
        client = await self.identifier(request)
        # Limiter.try_acquire, not try_acquire_async: the latter holds one lock per
        # process across the Redis round trip, serialising every request; the Lua
        # script is atomic on its own, and the fallback never awaits.
        acquired = self.limiter.try_acquire(f"{INGEST_SCOPE}:{client}", blocking=False)
        if isawaitable(acquired):
            await acquired
        verdict = current_verdict()
        assert verdict is not None  # noqa: S101 - set by every FailoverBucket.put
        request.state.rate_limit = verdict
        if not verdict.allowed:
            await self.callback(request, response)
        response.headers.update(rate_limit_headers(verdict))


def get_rate_limiter(request: Request) -> IngestRateLimiter:
    """The app's rate limiter."""
    limiter: IngestRateLimiter = request.app.state.rate_limiter
    return limiter


RateLimiterDep = Annotated[IngestRateLimiter, Depends(get_rate_limiter)]
