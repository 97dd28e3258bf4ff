"""When batches are due, and how long retries wait: driven by a hand-moved clock."""

import pytest

from event_tracker_client.batching import BatchSchedule
from event_tracker_client.delivery import Backoff, retry_after_seconds


def test_nothing_queued_means_nothing_due() -> None:
    schedule = BatchSchedule(batch_size=10, flush_interval=2.0)
    assert schedule.seconds_until_due(0, now=100.0) is None


def test_a_partial_batch_is_due_flush_interval_after_its_first_event() -> None:
    schedule = BatchSchedule(batch_size=10, flush_interval=2.0)
    assert schedule.seconds_until_due(1, now=100.0) == 2.0
    assert schedule.seconds_until_due(5, now=101.5) == 0.5
    assert schedule.seconds_until_due(5, now=102.0) == 0.0


def test_a_full_batch_is_due_at_once() -> None:
    schedule = BatchSchedule(batch_size=10, flush_interval=2.0)
    assert schedule.seconds_until_due(1, now=100.0) == 2.0
    assert schedule.seconds_until_due(10, now=100.1) == 0.0


def test_flushing_sends_a_partial_batch_at_once() -> None:
    schedule = BatchSchedule(batch_size=10, flush_interval=2.0)
    assert schedule.seconds_until_due(3, now=100.0, flushing=True) == 0.0


def test_events_left_after_a_send_start_a_new_window() -> None:
    schedule = BatchSchedule(batch_size=10, flush_interval=2.0)
    assert schedule.seconds_until_due(15, now=100.0) == 0.0
    schedule.sent(now=100.4)
    assert schedule.seconds_until_due(5, now=101.0) == pytest.approx(1.4)
    # Emptied: the next event opens its own window.
    assert schedule.seconds_until_due(0, now=103.0) is None
    assert schedule.seconds_until_due(1, now=110.0) == 2.0


@pytest.mark.parametrize(("draw", "expected"), [(0.0, [0.5, 1, 2, 4, 5, 5]), (0.999, None)])
def test_backoff_doubles_up_to_its_maximum_with_half_of_it_random(
    draw: float, expected: list[float] | None
) -> None:
    backoff = Backoff(base=1.0, maximum=10.0, rng=lambda: draw)
    delays = [backoff.delay(retry) for retry in range(6)]
    if expected is not None:
        assert delays == expected
    else:
        assert delays == pytest.approx([1, 2, 4, 8, 10, 10], rel=1e-3)


def test_backoff_never_retries_before_retry_after_and_spreads_past_it() -> None:
    assert Backoff(1.0, 10.0, rng=lambda: 0.0).delay(0, retry_after=17) == 17
    assert Backoff(1.0, 10.0, rng=lambda: 0.5).delay(0, retry_after=17) == 17.5
    assert Backoff(1.0, 10.0, rng=lambda: 0.5).delay(0, retry_after=2) == 2.1


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("5", 5.0), ("0", 0.0), (None, None), ("soon", None), ("Fri, 04 Dec 2026 00:00:30 GMT", 30.0)],
)
def test_retry_after_is_seconds_or_a_date(header: str | None, seconds: float | None) -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 12, 4, tzinfo=UTC)
    assert retry_after_seconds(header, now) == seconds
