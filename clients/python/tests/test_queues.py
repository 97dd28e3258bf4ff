"""Both queues: order, bounds, the batch byte limit; the SQLite one across reopening."""

from pathlib import Path

import pytest

from event_tracker_client.config import MAX_BATCH_BYTES
from event_tracker_client.events import QueuedEvent, new_event
from event_tracker_client.queues import EventQueue, MemoryQueue, SqliteQueue


@pytest.fixture(params=["memory", "sqlite"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> EventQueue:
    if request.param == "memory":
        return MemoryQueue(capacity=5)
    return SqliteQueue(tmp_path / "events.db", capacity=5)


def test_events_come_out_in_order_and_leave_only_when_removed(queue: EventQueue) -> None:
    tracked = [new_event("u", "click", {"n": n}, None) for n in range(4)]
    for event in tracked:
        assert queue.put(event)
    assert queue.peek(3) == tracked[:3]
    assert queue.peek(3) == tracked[:3]  # peeking takes nothing away
    queue.remove(e.event_id for e in tracked[:3])
    assert queue.peek(3) == tracked[3:]
    assert len(queue) == 1


def test_a_full_queue_refuses_new_events(queue: EventQueue) -> None:
    for n in range(5):
        assert queue.put(new_event("u", "click", {"n": n}, None))
    extra = new_event("u", "click", {"n": 5}, None)
    assert not queue.put(extra)
    assert len(queue) == 5
    assert extra not in queue.peek(10)


def test_a_batch_stays_under_the_servers_body_limit() -> None:
    queue = MemoryQueue(capacity=500)
    big = "x" * 15_000
    for n in range(100):
        queue.put(new_event("u", "click", {"blob": big, "n": n}, None))
    batch = queue.peek(500)
    assert 0 < len(batch) < 100
    assert sum(e.size for e in batch) <= MAX_BATCH_BYTES


def test_the_sqlite_queue_keeps_its_events_for_the_next_process(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    first = SqliteQueue(path, capacity=100)
    tracked = [new_event("u", "click", {"n": n}, None) for n in range(3)]
    for event in tracked:
        first.put(event)
    first.remove([tracked[0].event_id])
    first.close()
    again = SqliteQueue(path, capacity=100)
    assert len(again) == 2
    assert again.peek(10) == [QueuedEvent(e.event_id, e.body) for e in tracked[1:]]
