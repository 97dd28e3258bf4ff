"""Sliding-window logs of client requests: in Redis (shared) and in memory (per process).

Both apply the same rule with pyrate-limiter's sliding-window-log algorithm: a request
is admitted while fewer than `limit` requests of the client fall in the last `interval`.
"""

import math
import time
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass

from pyrate_limiter import (
    Decision,
    InMemoryBucket,
    Rate,
    RateItem,
    RedisBucket,
    SlidingWindowLog,
    id_generator,
)
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

# Bounds on the fallback's memory: idle clients are dropped, the oldest first.
FALLBACK_MAX_CLIENTS = 100_000

# One atomic step of a sliding-window log. Unlike pyrate-limiter's stock script, which
# counts entries up to the caller's `now` only, every entry not yet expired is counted:
# an entry stamped a millisecond "in the future" by another instance's clock must still
# take a slot, or two instances together admit more than the limit.
WINDOW_SCRIPT = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window_start = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local member = ARGV[4]
local ttl_ms = tonumber(ARGV[5])

redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. window_start)
local count = redis.call('ZCARD', key)
local admitted = 0
if count < limit then
    redis.call('ZADD', key, now, member)
    count = count + 1
    admitted = 1
end
redis.call('PEXPIRE', key, ttl_ms)

local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
local blocking = -1
if admitted == 0 then
    local entry = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    blocking = tonumber(entry[2])
end
return {admitted, count, tonumber(oldest[2]) or now, blocking}
"""


class RollingWindow(SlidingWindowLog):
    """pyrate-limiter's sliding-window log over the half-open window (now - interval, now].

    A request made at `t` stops counting at exactly `t + interval`, so a wait of a
    whole number of seconds is exact (the stock window keeps it one millisecond longer).
    """

    def window_start(self, rate: Rate, now: int) -> int:
        """First millisecond still inside the window."""
        return now - rate.interval + 1

    def retry_after(self, rate: Rate, now: int, blocking_timestamp: int | None) -> int:
        """Milliseconds until the blocking entry leaves the window."""
        if blocking_timestamp is None:
            return 0
        return max(0, blocking_timestamp + rate.interval - now)


ALGORITHM = RollingWindow()


@dataclass(frozen=True)
class WindowCount:
    """What one check of a client's window found (timestamps in epoch milliseconds)."""

    admitted: bool
    count: int
    oldest_ms: int
    blocking_ms: int | None


@dataclass(frozen=True)
class Verdict:
    """The decision on one request and what its `RateLimit-*` headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after_seconds: int
    shared: bool

    @classmethod
    def from_window(
        cls, rate: Rate, now_ms: int, window: WindowCount, *, shared: bool
    ) -> "Verdict":
        """Derive the verdict: a slot frees when the oldest counted request leaves the window."""
        reset_ms = ALGORITHM.retry_after(rate, now_ms, window.oldest_ms)
        blocking_ms = window.oldest_ms if window.blocking_ms is None else window.blocking_ms
        retry_ms = 0 if window.admitted else ALGORITHM.retry_after(rate, now_ms, blocking_ms)
        return cls(
            allowed=window.admitted,
            limit=rate.limit,
            remaining=max(0, rate.limit - window.count),
            reset_seconds=max(1, math.ceil(reset_ms / 1000)),
            retry_after_seconds=0 if window.admitted else max(1, math.ceil(retry_ms / 1000)),
            shared=shared,
        )


def wall_clock_ms() -> int:
    """Epoch milliseconds: the one clock every instance shares (keep hosts NTP-synced)."""
    return time.time_ns() // 1_000_000


class RedisWindowBucket(RedisBucket):
    """pyrate-limiter's Redis bucket for one client, with the all-entries script above."""

    def __init__(self, rate: Rate, redis: Redis, key: str, script: AsyncScript) -> None:
        """A bucket over the sorted set `key`; `script` is WINDOW_SCRIPT registered on `redis`."""
        super().__init__([rate], redis, key, script.sha, ALGORITHM)
        self._rate = rate
        self._script = script
        self.window: WindowCount | None = None

    def _check_and_insert(self, item: RateItem) -> Awaitable[Decision]:
        return self._run_script(item)

    async def _run_script(self, item: RateItem) -> Decision:
        # AsyncScript reloads the script after NOSCRIPT, e.g. when Redis restarted empty.
        reply = await self._script(
            keys=[self.bucket_key],
            args=[
                item.timestamp,
                self._algorithm.window_start(self._rate, item.timestamp),
                self._rate.limit,
                f"{item.timestamp}:{id_generator()}",
                self._rate.interval,
            ],
        )
        admitted, count, oldest, blocking = (int(value) for value in reply)
        self.window = WindowCount(
            admitted=bool(admitted),
            count=count,
            oldest_ms=oldest,
            blocking_ms=blocking if blocking >= 0 else None,
        )
        if admitted:
            return Decision()
        retry_ms = self._algorithm.retry_after(self._rate, item.timestamp, self.window.blocking_ms)
        return Decision(failing_rate=self._rate, retry_after_ms=retry_ms)


class MemoryWindows:
    """Per-process sliding-window logs, one pyrate-limiter `InMemoryBucket` per client."""

    def __init__(self, rate: Rate, max_clients: int = FALLBACK_MAX_CLIENTS) -> None:
        """Apply `rate` to each client, remembering at most `max_clients` of them."""
        self.rate = rate
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, InMemoryBucket] = OrderedDict()
        self._next_sweep_ms = 0

    def __len__(self) -> int:
        """How many clients are remembered."""
        return len(self._buckets)

    def check(self, key: str, item: RateItem) -> WindowCount:
        """Count `item` against `key`'s window if it fits; never awaits, so it is atomic."""
        self._sweep(item.timestamp)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = InMemoryBucket([self.rate], ALGORITHM)
            self._buckets[key] = bucket
        self._buckets.move_to_end(key)
        bucket.leak(item.timestamp)
        admitted = bucket.put(item)
        items = bucket.items
        count = len(items)
        blocking = None if admitted else items[count - self.rate.limit].timestamp
        return WindowCount(admitted, count, items[0].timestamp if items else 0, blocking)

    def _sweep(self, now_ms: int) -> None:
        # Forget clients whose window is empty, at most once per window; then cap the size.
        if now_ms >= self._next_sweep_ms:
            self._next_sweep_ms = now_ms + self.rate.interval
            window_start = ALGORITHM.window_start(self.rate, now_ms)
            idle = [
                key
                for key, bucket in self._buckets.items()
                if not bucket.items or bucket.items[-1].timestamp < window_start
            ]
            for key in idle:
                del self._buckets[key]
        while len(self._buckets) >= self.max_clients:
            self._buckets.popitem(last=False)
