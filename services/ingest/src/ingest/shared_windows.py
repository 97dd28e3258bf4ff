"""The rate-limit windows every instance shares, in Redis (design §8).

One sliding-window log per client key, checked by one Lua script that reads Redis's own
clock, so instances with skewed clocks still share one exact limit. One key per script
call: Redis Cluster routes each call to the slot of its key. Keys expire when idle.

The checks of one event-loop iteration travel together, as one non-transactional pipeline
of those single-key calls (a cluster client splits it by node): one round trip for many
concurrent requests. Measured in-process against one call per request, it cost about half
the CPU per check at 20 concurrent requests.
"""

import asyncio
import hashlib
import logging
import time
import uuid
from typing import Any, Literal, NamedTuple

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, NoScriptError, RedisError

from activity_contract.startup import DependencyRefusedError
from ingest.metrics import IngestMetrics
from ingest.settings import RateLimitRule

logger = logging.getLogger(__name__)

# Failures of the shared store that make us fall back instead of failing the request.
REDIS_FAILURES = (RedisError, OSError, TimeoutError)
# Those of them that are Redis refusing REDIS_URL's credentials (WRONGPASS, NOAUTH, NOPERM).
REDIS_REFUSALS = (AuthenticationError, NoPermissionError)
# The shared store as readiness reports it: serving, failing or slow, refusing credentials.
RedisState = Literal["up", "degraded", "auth_failed"]
# During an outage Redis is tried again at most this often (one check probes).
REDIS_RETRY_SECONDS = 1.0
REDIS_MAX_CONNECTIONS = 16

# An entry per admitted request, scored by Redis's clock in milliseconds; an entry made at t
# counts until t + window. ARGV: limit, window_ms, a unique member. Reply: admitted, count,
# ms until the oldest entry leaves (reset), ms until a slot frees (retry after, if refused).
WINDOW_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local key, limit, window = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
local admitted = 0
if count < limit then
    redis.call('ZADD', key, now, ARGV[3])
    count = count + 1
    admitted = 1
end
redis.call('PEXPIRE', key, window)
local oldest = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]) or now
local retry = 0
if admitted == 0 then
    local rank = count - limit
    retry = tonumber(redis.call('ZRANGE', key, rank, rank, 'WITHSCORES')[2]) + window - now
end
return {admitted, count, oldest + window - now, retry}
"""


# One check: the key, then the script's arguments (limit, window ms, a unique member).
_Call = tuple[str, int, int, str]


class WindowReply(NamedTuple):
    """A window's answer to one check (the in-memory fallback answers the same way)."""

    admitted: bool
    entries: int  # in the window, this request's included if admitted
    reset_ms: int  # until the oldest entry leaves the window
    retry_ms: int  # until a slot frees, if refused (else 0)


class SharedWindows:
    """The Redis windows every instance shares; None answers mean "Redis failed: fall back"."""

    def __init__(
        self, redis_url: str, key_prefix: str, timeout: float, metrics: IngestMetrics
    ) -> None:
        """Prepare checks under `key_prefix`, each Redis call bounded by `timeout` seconds."""
        self._redis_url = redis_url
        self._prefix = key_prefix
        self._timeout = timeout
        self._metrics = metrics
        self._redis: Redis | None = None
        # Redis knows the script by this digest; loaded at the first NOSCRIPT.
        self._script_sha = hashlib.sha1(WINDOW_SCRIPT.encode()).hexdigest()  # noqa: S324
        # The checks of this loop iteration, each with the future of its reply.
        self._batch: list[tuple[_Call, asyncio.Future[WindowReply | None]]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._member_prefix = uuid.uuid4().hex[:12] + ":"
        self._members = 0
        self.state: RedisState = "up"
        self._command_refused = False  # NOPERM: a PING answered does not clear it
        self._retry_at = 0.0

    async def start(self) -> None:
        """Create the client; an unreachable Redis only degrades (fail-open).

        Redis refusing the credentials raises `DependencyRefusedError`: no retry fixes it.
        """
        # Deliberate bounds: no retries (the next check is the retry), and every call made
        # within one check's budget (`asyncio.timeout` around each ping and each round
        # trip) instead of redis-py's retries and 5 s timeouts. No socket timeout: it
        # would arm a timer per reply read (measured: about a fifth of a check's CPU).
        pool = BlockingConnectionPool.from_url(
            self._redis_url,
            max_connections=REDIS_MAX_CONNECTIONS,
            timeout=self._timeout,
            socket_timeout=None,
            socket_connect_timeout=self._timeout,
            retry=Retry(NoBackoff(), retries=0),
            health_check_interval=0,
        )
        self._redis = Redis.from_pool(pool)
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.ping()
        except REDIS_REFUSALS as error:
            refusal = self._refusal_message(error)
            await self.stop()
            raise DependencyRefusedError(refusal) from None
        except REDIS_FAILURES as error:
            self._record_failure(error)

    async def stop(self) -> None:
        """Close the client (checks still on their way answer `None`: fall back)."""
        for task in list(self._sending):
            task.cancel()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def check(self, key: str, rule: RateLimitRule) -> WindowReply | None:
        """Count a request against `key`'s window in Redis; None when Redis cannot answer."""
        if self._redis is None or not self._should_try():
            return None
        self._members += 1
        call = (
            self._prefix + key,
            rule.limit,
            rule.period_seconds * 1000,
            f"{self._member_prefix}{self._members}",
        )
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[WindowReply | None] = loop.create_future()
        self._batch.append((call, reply))
        if len(self._batch) == 1:
            loop.call_soon(self._send_batch)
        return await reply

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[_Call, asyncio.Future[WindowReply | None]]]) -> None:
        replies: list[WindowReply | None] = [None] * len(batch)
        try:
            async with asyncio.timeout(self._timeout):
                answers = await self._run_script([call for call, _ in batch])
            self._record_success()
            replies = [WindowReply(bool(a[0]), *a[1:]) for a in answers]
        except REDIS_FAILURES as error:
            self._record_failure(error)
        finally:  # every request gets an answer, also when stopped: None, fall back
            for (_, future), reply in zip(batch, replies, strict=True):
                if not future.done():  # its request may have gone (cancelled)
                    future.set_result(reply)

    async def _run_script(self, calls: list[_Call]) -> list[Any]:
        """The script's answer to each call, in one pipeline; loaded again if Redis lost it."""
        answers = await self._pipelined(calls)
        if any(isinstance(answer, NoScriptError) for answer in answers):  # Redis restarted
            self._script_sha = await self._connected().script_load(WINDOW_SCRIPT)
            answers = await self._pipelined(calls)
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return answers

    async def _pipelined(self, calls: list[_Call]) -> list[Any]:
        pipe = self._connected().pipeline(transaction=False)
        for key, limit, window_ms, member in calls:
            pipe.evalsha(self._script_sha, 1, key, limit, window_ms, member)
        return list(await pipe.execute(raise_on_error=False))

    def _connected(self) -> Redis:
        if self._redis is None:
            raise RedisError("the rate limiter's Redis client is stopped")
        return self._redis

    async def ping(self) -> bool:
        """Whether Redis answers within the timeout; updates the health either way."""
        if self._redis is None:
            return False
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.ping()
        except REDIS_FAILURES as error:
            self._record_failure(error)
            return False
        if not self._command_refused:
            self._record_success()
        return True

    def _should_try(self) -> bool:
        if self.state == "up":
            return True
        now = time.monotonic()
        if now < self._retry_at:
            return False
        self._retry_at = now + REDIS_RETRY_SECONDS  # this check probes
        return True

    def _record_failure(self, error: BaseException) -> None:
        self._retry_at = time.monotonic() + REDIS_RETRY_SECONDS
        self._command_refused = isinstance(error, NoPermissionError)
        refused = isinstance(error, REDIS_REFUSALS)
        state: RedisState = "auth_failed" if refused else "degraded"
        if self.state == state:
            return
        self.state = state
        self._metrics.rate_limit_redis_up.set(0)
        extra = {"error_type": type(error).__name__}
        if refused:
            logger.error(
                "%s: rate limiting per process in memory until it accepts them",
                self._refusal_message(error),
                extra=extra,
            )
        else:
            logger.warning(
                "redis unavailable: rate limiting per process in memory until it answers",
                extra=extra,
            )

    def _record_success(self) -> None:
        self._command_refused = False
        if self.state == "up":
            return
        self.state = "up"
        self._metrics.rate_limit_redis_up.set(1)
        logger.warning("redis available again: rate limiting shared through redis")

    def _refusal_message(self, error: BaseException) -> str:
        """Which credentials Redis refused, naming REDIS_URL and never the password."""
        options = self._redis.connection_pool.connection_kwargs if self._redis else {}
        user = options.get("username") or "default"
        if isinstance(error, NoPermissionError):
            cause = f"user '{user}' lacks a permission the rate limiter needs ({error})"
        elif options.get("password") is None:
            cause = "it requires a password and the URL gives none"
        else:
            cause = f"authentication failed for user '{user}'"
        return f"Redis refused the credentials: {cause} (REDIS_URL)"
