"""What the client does with each answer of the server, on a hand-moved clock."""

import json
from datetime import UTC, datetime

import pytest

from event_tracker_client.config import ClientConfig
from event_tracker_client.delivery import Backoff, BatchDelivery, DeliveryStats
from event_tracker_client.events import QueuedEvent, batch_body, new_event

CONFIG = ClientConfig(base_url="http://ingest", max_retry_seconds=60, backoff_base=1, backoff_max=8)
SENT_AT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def events(count: int) -> list[QueuedEvent]:
    return [new_event(f"user-{n}", "page_view", {"n": n}, None) for n in range(count)]


def delivery(batch: list[QueuedEvent], now: float = 0.0) -> tuple[BatchDelivery, DeliveryStats]:
    stats = DeliveryStats()
    return BatchDelivery(batch, CONFIG, stats, now, Backoff(1, 8, rng=lambda: 0.0)), stats


def sent_ids(body: bytes) -> list[str]:
    return [event["event_id"] for event in json.loads(body)["events"]]


def envelope(error: str, details: list[dict[str, object]] | None = None) -> bytes:
    return json.dumps({"error": error, "message": "m", "details": details or []}).encode()


def test_a_batch_body_carries_each_event_with_its_id_time_and_sent_at() -> None:
    batch = events(3)
    body = json.loads(batch_body(batch, SENT_AT))
    assert [e["event_id"] for e in body["events"]] == [e.event_id for e in batch]
    for event in body["events"]:
        assert event["sent_at"] == "2026-12-04T12:00:00+00:00"
        assert datetime.fromisoformat(event["timestamp"]).tzinfo is not None
        fields = {"event_id", "user_id", "event_type", "timestamp", "metadata", "sent_at"}
        assert set(event) == fields


def test_accepted_batch_is_done() -> None:
    batch = events(3)
    attempt, stats = delivery(batch)
    assert attempt.next_delay() == 0
    attempt.body(SENT_AT)
    attempt.answered(202, {}, b"{}", now=0.1)
    assert attempt.next_delay() is None
    assert attempt.delivered == [e.event_id for e in batch]
    assert stats.delivered == 3


def test_503_and_no_answer_are_retried_with_the_same_ids_backing_off() -> None:
    batch = events(4)
    attempt, stats = delivery(batch)
    first = sent_ids(attempt.body(SENT_AT))
    attempt.answered(503, {"retry-after": "5"}, envelope("broker_unavailable"), now=0.1)
    assert attempt.next_delay() == 5  # Retry-After is longer than the first backoff (0.5)
    assert sent_ids(attempt.body(SENT_AT)) == first
    attempt.no_answer(ConnectionRefusedError("refused"), now=5.2)
    assert attempt.next_delay() == 1.0  # the second retry: 2 s, half of it random (drawn 0)
    attempt.no_answer(ConnectionRefusedError("refused"), now=6.3)
    assert attempt.next_delay() == 2.0
    assert sent_ids(attempt.body(SENT_AT)) == first
    attempt.answered(202, {}, b"{}", now=9.0)
    assert attempt.delivered == first
    assert (stats.retries, stats.unavailable, stats.no_answer, stats.delivered) == (3, 1, 2, 4)


def test_429_waits_retry_after_not_the_backoff() -> None:
    attempt, stats = delivery(events(2))
    for _ in range(5):
        attempt.body(SENT_AT)
        attempt.answered(429, {"retry-after": "3"}, envelope("rate_limited"), now=0.0)
        assert attempt.next_delay() == 3
    assert stats.rate_limited == 5


def test_retries_stop_after_max_retry_seconds_and_the_events_are_dropped() -> None:
    batch = events(2)
    attempt, stats = delivery(batch, now=100.0)
    now = 100.0
    while attempt.next_delay() is not None:
        now += attempt.next_delay() or 0.0
        attempt.body(SENT_AT)
        attempt.answered(503, {"retry-after": "5"}, envelope("broker_unavailable"), now=now)
    assert now <= 100.0 + CONFIG.max_retry_seconds
    assert [f.reason for f in attempt.failures] == ["dropped", "dropped"]
    assert {f.event_id for f in attempt.failures} == {e.event_id for e in batch}
    assert attempt.failures[0].error == "broker_unavailable"
    assert stats.dropped == 2
    assert stats.delivered == 0


@pytest.mark.parametrize("status", [400, 401, 404, 415])
def test_other_4xx_are_rejected_at_once_with_the_servers_error(status: int) -> None:
    batch = events(3)
    attempt, stats = delivery(batch)
    attempt.body(SENT_AT)
    attempt.answered(status, {}, envelope("unauthorized", [{"loc": ["header"]}]), now=0.0)
    assert attempt.next_delay() is None
    assert [f.reason for f in attempt.failures] == ["rejected"] * 3
    assert attempt.failures[0].error == "unauthorized"
    assert attempt.failures[0].details == ({"loc": ["header"]},)
    assert stats.rejected == 3
    assert stats.retries == 0


def test_422_rejects_only_the_events_it_names_and_sends_the_rest() -> None:
    batch = events(4)
    attempt, stats = delivery(batch)
    attempt.body(SENT_AT)
    detail = {"loc": ["body", "events", 2, "user_id"], "type": "value_error", "index": 2}
    attempt.answered(422, {}, envelope("validation_error", [detail]), now=0.0)
    assert [f.event_id for f in attempt.failures] == [batch[2].event_id]
    assert attempt.failures[0].details == (detail,)
    assert attempt.next_delay() == 0
    resent = sent_ids(attempt.body(SENT_AT))
    assert resent == [batch[i].event_id for i in (0, 1, 3)]
    attempt.answered(202, {}, b"{}", now=0.1)
    assert stats.delivered == 3
    assert stats.rejected == 1


def test_413_halves_the_request_until_it_fits() -> None:
    batch = events(4)
    attempt, _ = delivery(batch)
    assert len(sent_ids(attempt.body(SENT_AT))) == 4
    attempt.answered(413, {}, envelope("payload_too_large"), now=0.0)
    assert sent_ids(attempt.body(SENT_AT)) == [e.event_id for e in batch[:2]]
    attempt.answered(202, {}, b"{}", now=0.0)
    assert sent_ids(attempt.body(SENT_AT)) == [e.event_id for e in batch[2:]]
    attempt.answered(202, {}, b"{}", now=0.0)
    assert attempt.next_delay() is None
    assert attempt.delivered == [e.event_id for e in batch]


def test_an_event_json_cannot_hold_is_refused_by_track_itself() -> None:
    with pytest.raises(ValueError, match="JSON"):
        new_event("alice", "page_view", {"x": float("nan")}, None)
