"""Per-client rate limiting (design §8): fastapi-limiter driving pyrate-limiter.

- The FastAPI dependency is fastapi-limiter's `RateLimiter`, with our identifier (the
  client's key, `ingest.client_identity`) and callback (429 with `Retry-After`).
- Its pyrate-limiter `Limiter` routes each client key, through the `ClientWindows` bucket
  factory, to that client's `ClientWindow` bucket: a sliding-window log in Redis
  (`ingest.shared_windows`), shared exactly by every instance.
- Cheap refusals: a client Redis refused is refused locally until the moment its
  `Retry-After` names, without a round trip (as Envoy's over-limit cache does); on the
  write routes before anything else (`ingest.http.write_path`). Nothing is admitted locally.
- Fail-open: when Redis fails or is slow, the bucket applies the same rule per process in
  memory (pyrate-limiter's in-memory buckets), bounded by stored entries; logged once per
  outage, counted, and reported by readiness (`SharedWindows.state`).
"""

import logging
import math
import time
from contextvars import ContextVar
from dataclasses import dataclass
from inspect import isawaitable
from typing import NoReturn

from fastapi import Request, Response
from fastapi_limiter.depends import RateLimiter
from pyrate_limiter import AbstractBucket, BucketFactory, Decision, Limiter, Rate, RateItem
from starlette.requests import HTTPConnection

from ingest.client_identity import ClientIdentity
from ingest.http.errors import RateLimitedError
from ingest.local_windows import LocalWindows
from ingest.metrics import IngestMetrics
from ingest.settings import RateLimitRule
from ingest.shared_windows import SharedWindows, WindowReply

logger = logging.getLogger(__name__)

# Clients refused locally are remembered at most this many at once.
REFUSED_MAX_CLIENTS = 100_000
# Refusals are logged aggregated, at most once per this many seconds.
REFUSAL_LOG_SECONDS = 10.0


# --- Verdicts ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision on one request and what its `RateLimit-*` headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after_seconds: int
    retry_after_ms: float = 0.0  # precise, for the local refusal cache

    @classmethod
    def of(cls, limit: int, window: WindowReply) -> "Verdict":
        """From a window's answer to a check under a limit of `limit`."""
        allowed, entries, reset_ms, retry_ms = window
        return cls(
            allowed=allowed,
            limit=limit,
            remaining=max(0, limit - entries),
            reset_seconds=max(1, math.ceil(reset_ms / 1000)),
            retry_after_seconds=0 if allowed else max(1, math.ceil(retry_ms / 1000)),
            retry_after_ms=0.0 if allowed else retry_ms,
        )

    def headers(self) -> dict[str, str]:
        """`RateLimit-*` (IETF draft), plus `Retry-After` when refused."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_seconds)
        return headers


# --- Cheap refusals ---------------------------------------------------------------------


class RecentRefusals:
    """Clients Redis refused, refused locally until their `Retry-After` has passed."""

    def __init__(self, max_clients: int = REFUSED_MAX_CLIENTS) -> None:
        """Remember at most `max_clients` (the oldest are forgotten first)."""
        self._max_clients = max_clients
        self._until: dict[str, tuple[float, float, int]] = {}  # retry at, reset at, limit

    def verdict(self, key: str, now: float) -> Verdict | None:
        """A refusal while `key`'s last one lasts (monotonic `now`), else None."""
        entry = self._until.get(key)
        if entry is None:
            return None
        retry_at, reset_at, limit = entry
        if now >= retry_at:
            del self._until[key]
            return None
        return Verdict(
            allowed=False,
            limit=limit,
            remaining=0,
            reset_seconds=max(1, math.ceil(reset_at - now)),
            retry_after_seconds=max(1, math.ceil(retry_at - now)),
        )

    def remember(self, key: str, verdict: Verdict, now: float) -> None:
        """Refuse `key` locally until the refusal's retry time has passed."""
        if len(self._until) >= self._max_clients:
            self._forget_expired(now)
        retry_at = now + verdict.retry_after_ms / 1000
        self._until[key] = (retry_at, now + verdict.reset_seconds, verdict.limit)

    def _forget_expired(self, now: float) -> None:
        for key in [key for key, (retry_at, _, _) in self._until.items() if retry_at <= now]:
            del self._until[key]
        while len(self._until) >= self._max_clients:
            del self._until[next(iter(self._until))]


class RefusalLog:
    """Refusals logged aggregated (one line per interval), never one line per request."""

    def __init__(self, scope: str, interval: float = REFUSAL_LOG_SECONDS) -> None:
        """Log for `scope` at most once per `interval` seconds."""
        self._scope = scope
        self._interval = interval
        self._refused = 0
        self._clients: set[str] = set()
        self._next_log = 0.0

    def note(self, key: str, now: float) -> None:
        """Count one refusal of `key`; log the interval's totals when it is over."""
        self._refused += 1
        if len(self._clients) < 1000:
            self._clients.add(key)
        if now < self._next_log:
            return
        logger.info(
            "rate limited",
            extra={"scope": self._scope, "refused": self._refused, "clients": len(self._clients)},
        )
        self._refused = 0
        self._clients.clear()
        self._next_log = now + self._interval


# --- The buckets pyrate-limiter routes to ------------------------------------------------

# The verdict of the current request's `ClientWindow.put`, for its `RateLimit-*` headers
# (the put runs in the request's own task, so its context is the request's).
VERDICT: ContextVar[Verdict] = ContextVar("rate_limit_verdict")


class ClientWindows(BucketFactory):
    """pyrate-limiter's per-key extension point: each client key gets its own window."""

    def __init__(self, rule: RateLimitRule, shared: SharedWindows, metrics: IngestMetrics) -> None:
        """Apply `rule` to each key: in `shared` Redis, or in memory while it cannot answer."""
        self.rule = rule
        self.rates = [Rate(rule.limit, rule.period_seconds * 1000)]
        self.shared = shared
        self.local = LocalWindows(rule)
        self.refusals = RecentRefusals()
        self.fallbacks = metrics.rate_limit_fallback

    def wrap_item(self, name: str, weight: int = 1) -> RateItem:
        """A request of client `name`; Redis's clock (or the fallback's) stamps it."""
        return RateItem(name, 0, weight=weight)

    def get(self, item: RateItem) -> "ClientWindow":
        """The client's window (its state lives in Redis, or in the fallback's buckets)."""
        return ClientWindow(self, item.name)


class ClientWindow(AbstractBucket):
    """One client's sliding-window log; `put` counts a request in it if it fits."""

    is_async = True

    def __init__(self, windows: ClientWindows, key: str) -> None:
        """The window of `key` (`write:<client>`) under `windows`' rule."""
        self.windows = windows
        self.key = key
        self._rates = windows.rates

    async def put(self, item: RateItem) -> bool:
        """Count the request in Redis (a refusal is remembered), or in memory if Redis fails."""
        windows, now = self.windows, time.monotonic()
        reply = await windows.shared.check(self.key, windows.rule)
        if reply is None:
            windows.fallbacks.inc()
            verdict = Verdict.of(windows.rule.limit, windows.local.check(self.key))
        else:
            verdict = Verdict.of(windows.rule.limit, reply)
            if not verdict.allowed:
                windows.refusals.remember(self.key, verdict, now)
        VERDICT.set(verdict)
        failing = None if verdict.allowed else self._rates[0]
        return self._record(item, Decision(failing, int(verdict.retry_after_ms)))

    def leak(self, current_timestamp: int | None = None) -> int:
        """Nothing to leak: Redis trims on every check and expires idle keys itself."""
        return 0

    def flush(self) -> None:
        """Windows are never flushed: they expire."""

    def count(self) -> int:
        """Not kept here (the count lives in Redis)."""
        return 0

    def peek(self, index: int) -> None:
        """Not kept here (the entries live in Redis)."""


# --- The dependency ---------------------------------------------------------------------


class ClientRateLimiter(RateLimiter):
    """fastapi-limiter's dependency over a pyrate-limiter `Limiter` of `ClientWindows`."""

    def __init__(
        self,
        scope: str,
        rule: RateLimitRule,
        shared: SharedWindows,
        identity: ClientIdentity,
        metrics: IngestMetrics,
    ) -> None:
        """Limit `scope` (its own budget per client) by `rule`."""
        self.scope = scope
        self.windows = ClientWindows(rule, shared, metrics)
        self._log = RefusalLog(scope)
        self._refused = metrics.rate_limited.labels(scope=scope)
        limiter = Limiter(self.windows)
        super().__init__(limiter=limiter, identifier=identity, callback=refuse, blocking=False)

    async def __call__(self, request: Request, response: Response) -> None:
        """A live local refusal, else the library's check keyed by scope; `RateLimit-*` headers.

        fastapi-limiter 0.2's own `__call__` keys each route apart by walking `app.routes`
        (which fails with included routers in current FastAPI; our write routes share one
        budget), and its `try_acquire_async` holds a per-loop lock across the Redis round
        trip (one check at a time per process); `try_acquire` awaits the bucket unlocked.
        """
        key = await self.key(request)
        verdict = self.refused_locally(key) or await self.counted(key)
        if not verdict.allowed:
            request.state.rate_limit = verdict
            await self.callback(request, response)
        response.headers.update(verdict.headers())

    def refused_locally(self, key: str) -> Verdict | None:
        """The client's live local refusal (no Redis, nothing counted), else None."""
        verdict = self.windows.refusals.verdict(key, time.monotonic())
        if verdict is not None:
            self._note_refusal(key)
        return verdict

    async def counted(self, key: str) -> Verdict:
        """The request counted in the client's window by the library's limiter."""
        admitted = self.limiter.try_acquire(key, blocking=self.blocking)
        if isawaitable(admitted):
            await admitted
        verdict = VERDICT.get()
        if not verdict.allowed:
            self._note_refusal(key)
        return verdict

    async def key(self, connection: HTTPConnection) -> str:
        """The client's key in this limiter's scope (`write:<client>`)."""
        return f"{self.scope}:{await self.identifier(connection)}"

    def _note_refusal(self, key: str) -> None:
        self._refused.inc()
        self._log.note(key, time.monotonic())


async def refuse(request: Request, _: Response) -> NoReturn:
    """fastapi-limiter callback: answer 429 with `Retry-After` and `RateLimit-*`."""
    verdict: Verdict = request.state.rate_limit
    raise RateLimitedError(verdict.headers())
