"""Delivering one batch: what each answer of the server means, and when to try again.

No I/O here: the sync and the asyncio client send the requests and sleep; this module says
what to send next, how long to wait first, and what became of every event. Every try of a
batch sends the same events with the same `event_id`s, so the server stores each once.
"""

import email.utils
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from event_tracker_client.config import ClientConfig
from event_tracker_client.events import QueuedEvent, batch_body

BATCH_PATH = "/api/v1/activities/batch"
logger = logging.getLogger("event_tracker_client")

# Answers worth trying again: timeouts, the rate limit, the server or a proxy in trouble.
_RETRIED = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Failure:
    """An event that will not be stored, and why.

    `reason` is `rejected` (the server refused it: not retried) or `dropped` (not accepted
    within `max_retry_seconds`, or unsent when a memory-only client closed). `error`,
    `message` and `details` are the server's error envelope when it answered one.
    """

    event_id: str
    reason: str
    status: int | None
    error: str
    message: str
    details: tuple[Mapping[str, Any], ...] = ()


FailureCallback = Callable[[Sequence[Failure]], None]


@dataclass
class DeliveryStats:
    """Counters since the client started; read them any time."""

    tracked: int = 0
    delivered: int = 0
    rejected: int = 0
    dropped: int = 0
    dropped_queue_full: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    unavailable: int = 0
    no_answer: int = 0


class Backoff:
    """Exponential backoff with jitter: try n waits about `base * 2**n`, at most `maximum`.

    "Equal jitter": half the delay is fixed, half random, so clients that failed together
    do not retry together, and no retry comes right away.
    """

    def __init__(
        self, base: float, maximum: float, rng: Callable[[], float] = random.random
    ) -> None:
        """Delays from `base` doubling up to `maximum`; `rng` gives floats in [0, 1)."""
        self.base = base
        self.maximum = maximum
        self.rng = rng

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds before retry number `retry` (0 for the first), never less than `retry_after`."""
        ceiling = min(self.maximum, self.base * 2.0**retry)
        jittered = ceiling / 2 + self.rng() * ceiling / 2
        if retry_after is None:
            return jittered
        # Past Retry-After, spread the retries a little (up to a tenth, at most a second).
        return retry_after + self.rng() * min(1.0, retry_after / 10)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """The `Retry-After` header as seconds: a number, or an HTTP date; None if absent/bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _envelope(content: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(content)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


class BatchDelivery:
    """The tries of one batch, until every event is delivered, rejected or dropped.

    Events are sent in one request while they can be: a `413` halves the request, a `422`
    that names the bad events (`details[].index`) rejects those and sends the others.
    """

    def __init__(
        self,
        events: Sequence[QueuedEvent],
        config: ClientConfig,
        stats: DeliveryStats,
        now: float,
        backoff: Backoff | None = None,
    ) -> None:
        """Start delivering `events` at monotonic time `now`."""
        self.pending = list(events)
        self.delivered: list[str] = []
        self.failures: list[Failure] = []
        self._config = config
        self._stats = stats
        self._backoff = backoff or Backoff(config.backoff_base, config.backoff_max)
        self._give_up_at = now + config.max_retry_seconds
        self._chunk = len(self.pending)
        self._retries = 0
        self._delay = 0.0

    @property
    def event_ids(self) -> list[str]:
        """Every event id of the batch, whatever became of it."""
        return [*self.delivered, *(f.event_id for f in self.failures), *self._ids(self.pending)]

    def next_delay(self) -> float | None:
        """Seconds to wait before the next request; None when the batch is done."""
        return self._delay if self.pending else None

    def body(self, sent_at: datetime) -> bytes:
        """The next request's body, stamped with the client's clock now."""
        self._stats.requests += 1
        return batch_body(self.pending[: self._chunk], sent_at)

    def answered(self, status: int, headers: Mapping[str, str], content: bytes, now: float) -> None:
        """Take the server's answer to the last body."""
        sent = self.pending[: self._chunk]
        if 200 <= status < 300:
            self._done(sent)
            self.delivered += self._ids(sent)
            self._stats.delivered += len(sent)
            return
        envelope = _envelope(content)
        if status in _RETRIED:
            self._stats.rate_limited += status == 429
            self._stats.unavailable += status == 503
            retry_after = retry_after_seconds(headers.get("retry-after"))
            if status == 429 and retry_after is not None:
                # The rate limit says exactly when a slot frees: no need to back off further.
                delay = self._backoff.delay(0, retry_after)
            else:
                delay = max(self._backoff.delay(self._retries), retry_after or 0.0)
            self._retry(delay, now, status, envelope)
            return
        if status == 413 and len(sent) > 1:
            self._chunk = max(1, len(sent) // 2)
            self._delay = 0.0
            return
        details = envelope.get("details") or []
        indexed = [d for d in details if isinstance(d, dict) and isinstance(d.get("index"), int)]
        if status == 422 and indexed and len(sent) > 1:
            bad = {d["index"] for d in indexed if 0 <= d["index"] < len(sent)}
            for index in sorted(bad):
                own = tuple(d for d in indexed if d["index"] == index)
                self._fail([sent[index]], "rejected", status, envelope, own)
            self._done([e for i, e in enumerate(sent) if i in bad])
            self._delay = 0.0
            return
        self._fail(sent, "rejected", status, envelope, tuple(details))
        self._done(sent)

    def no_answer(self, error: Exception, now: float) -> None:
        """The last request got no answer (connection refused or lost, timeout)."""
        self._stats.no_answer += 1
        envelope = {"error": "no_answer", "message": f"{type(error).__name__}: {error}"}
        self._retry(self._backoff.delay(self._retries), now, None, envelope)

    def _retry(self, delay: float, now: float, status: int | None, envelope: Any) -> None:
        if now + delay > self._give_up_at:
            self._fail(self.pending, "dropped", status, envelope, ())
            self.pending = []
            return
        self._retries += 1
        self._stats.retries += 1
        self._delay = delay

    def _done(self, events: Sequence[QueuedEvent]) -> None:
        """These events are settled: the rest of the batch goes next, at once."""
        settled = {event.event_id for event in events}
        self.pending = [event for event in self.pending if event.event_id not in settled]
        self._chunk = min(self._chunk, len(self.pending))
        self._delay = 0.0

    def _fail(
        self,
        events: Sequence[QueuedEvent],
        reason: str,
        status: int | None,
        envelope: Mapping[str, Any],
        details: tuple[Mapping[str, Any], ...],
    ) -> None:
        error, message = str(envelope.get("error", "")), str(envelope.get("message", ""))
        if reason == "rejected":
            self._stats.rejected += len(events)
        else:
            self._stats.dropped += len(events)
        self.failures += [
            Failure(event.event_id, reason, status, error, message, details) for event in events
        ]

    @staticmethod
    def _ids(events: Sequence[QueuedEvent]) -> list[str]:
        return [event.event_id for event in events]


def report(failures: Sequence[Failure], callback: FailureCallback | None) -> None:
    """Log the failures (a line per cause) and hand them to the application's callback."""
    if not failures:
        return
    causes: dict[tuple[str, int | None, str], list[Failure]] = {}
    for failure in failures:
        causes.setdefault((failure.reason, failure.status, failure.error), []).append(failure)
    for (reason, status, error), group in causes.items():
        first = group[0]
        logger.warning(
            "%d event(s) %s (status %s, %s: %s), e.g. %s %s",
            len(group),
            reason,
            status,
            error or "-",
            first.message,
            first.event_id,
            list(first.details)[:3],
        )
    if callback is not None:
        try:
            callback(failures)
        except Exception:
            logger.exception("the on_failure callback raised")
