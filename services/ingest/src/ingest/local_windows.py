"""The rate limit per process in memory, for when Redis cannot answer (design §8).

The same rule as the shared windows (`ingest.shared_windows`), on pyrate-limiter's
in-memory buckets: one sliding-window log per client key, bounded by stored entries.
"""

import time
from collections import OrderedDict
from collections.abc import Callable

from pyrate_limiter import BucketFactory, InMemoryBucket, Limiter, Rate, RateItem, SlidingWindowLog

from ingest.settings import RateLimitRule
from ingest.shared_windows import WindowReply

# At most this many request entries over all clients (about 100 bytes each); the least
# recently seen clients are forgotten first.
FALLBACK_MAX_ENTRIES = 200_000


class RollingWindow(SlidingWindowLog):
    """pyrate-limiter's sliding log over (now - interval, now], as in the Redis script.

    A request made at t counts until exactly t + interval (the stock window keeps it one
    millisecond longer), so both stores give the same verdicts.
    """

    def window_start(self, rate: Rate, now: int) -> int:
        """First millisecond still inside the window."""
        return now - rate.interval + 1

    def retry_after(self, rate: Rate, now: int, blocking_timestamp: int | None) -> int:
        """Milliseconds until the blocking entry leaves the window."""
        return 0 if blocking_timestamp is None else max(0, blocking_timestamp + rate.interval - now)


ROLLING_WINDOW = RollingWindow()


def monotonic_ms() -> int:
    """The fallback's clock: it never leaves this process, so no wall clock is needed."""
    return time.monotonic_ns() // 1_000_000


class LocalWindows(BucketFactory):
    """The same rule per process, for when Redis cannot answer: one in-memory log per key.

    pyrate-limiter's per-key extension point, bounded: at most `max_entries` request
    entries over all clients (and as many clients); when full, the least recently seen
    clients are forgotten.
    """

    def __init__(
        self,
        rule: RateLimitRule,
        max_entries: int = FALLBACK_MAX_ENTRIES,
        clock: Callable[[], int] = monotonic_ms,
    ) -> None:
        """Apply `rule` to each client key, in milliseconds of `clock`."""
        self.rule = rule
        self.rate = Rate(rule.limit, rule.period_seconds * 1000)
        self.max_entries = max_entries
        self.clock = clock
        self.buckets: OrderedDict[str, InMemoryBucket] = OrderedDict()
        self.entries = 0
        self.limiter = Limiter(self)

    def wrap_item(self, name: str, weight: int = 1) -> RateItem:
        """Stamp a request with this process's monotonic clock."""
        return RateItem(name, self.clock(), weight=weight)

    def get(self, item: RateItem) -> InMemoryBucket:
        """The client's bucket, trimmed to its window; forget others when over the bound."""
        bucket = self.buckets.get(item.name)
        if bucket is None:
            bucket = InMemoryBucket([self.rate], ROLLING_WINDOW)
            self.buckets[item.name] = bucket
        else:
            self.buckets.move_to_end(item.name)
            self.entries -= bucket.leak(item.timestamp)
        while len(self.buckets) > 1 and (
            self.entries >= self.max_entries or len(self.buckets) > self.max_entries
        ):
            _, forgotten = self.buckets.popitem(last=False)
            self.entries -= forgotten.count()
        return bucket

    def check(self, key: str) -> WindowReply:
        """Count a request against `key` if it fits; never awaits, so it is atomic."""
        admitted = bool(self.limiter.try_acquire(key, blocking=False))
        self.entries += admitted
        items = self.buckets[key].items
        now, window = self.clock(), self.rate.interval
        count = len(items)
        blocking = items[count - self.rule.limit].timestamp if not admitted else 0
        reset_ms = items[0].timestamp + window - now if items else window
        return WindowReply(admitted, count, reset_ms, blocking + window - now)
