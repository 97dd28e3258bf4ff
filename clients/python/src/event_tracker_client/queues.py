"""Where tracked events wait until the server has them: in memory, or in a SQLite file.

Both queues keep events in the order tracked. A batch is read with `peek()` and leaves the
queue only with `remove()`, once the server accepted it (or it was given up): events in
flight when the process dies are still in a durable queue, and are sent again with the same
ids, which the server stores once.
"""

import itertools
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from event_tracker_client.config import MAX_BATCH_BYTES
from event_tracker_client.events import QueuedEvent

# The batch body's own bytes around its events: `{"events":[` and `]}`.
_BODY_OVERHEAD = 16


class EventQueue(Protocol):
    """What the senders need of a queue; safe to use from several threads."""

    def put(self, event: QueuedEvent) -> bool:
        """Add `event` at the end; False when the queue is full (the event is not kept)."""

    def peek(self, max_events: int) -> list[QueuedEvent]:
        """The oldest events, at most `max_events` and one batch body's bytes."""

    def remove(self, event_ids: Iterable[str]) -> None:
        """Forget these events (sent, refused or given up)."""

    def __len__(self) -> int:
        """Events held."""

    def close(self) -> None:
        """Release what the queue holds open."""


def _fits(events: Iterable[QueuedEvent], max_events: int) -> list[QueuedEvent]:
    """The leading events that fit one batch (always the first one)."""
    batch: list[QueuedEvent] = []
    size = _BODY_OVERHEAD
    for event in itertools.islice(events, max_events):
        size += event.size
        if batch and size > MAX_BATCH_BYTES:
            break
        batch.append(event)
    return batch


class MemoryQueue:
    """Events in this process's memory, at most `capacity` of them."""

    def __init__(self, capacity: int) -> None:
        """An empty queue."""
        self.capacity = capacity
        self._events: dict[str, QueuedEvent] = {}
        self._lock = threading.Lock()

    def put(self, event: QueuedEvent) -> bool:
        """Add `event` unless the queue is full."""
        with self._lock:
            if len(self._events) >= self.capacity:
                return False
            self._events[event.event_id] = event
            return True

    def peek(self, max_events: int) -> list[QueuedEvent]:
        """The oldest events that fit one batch."""
        with self._lock:
            return _fits(self._events.values(), max_events)

    def remove(self, event_ids: Iterable[str]) -> None:
        """Forget these events."""
        with self._lock:
            for event_id in event_ids:
                self._events.pop(event_id, None)

    def __len__(self) -> int:
        """Events held."""
        return len(self._events)

    def close(self) -> None:
        """Nothing to release."""


class SqliteQueue:
    """Events in a SQLite file: each `put()` is committed before `track()` returns.

    WAL journal with `synchronous=NORMAL`: a committed event survives the process being
    killed (not necessarily a power cut of the machine). One process per file.
    """

    def __init__(self, path: Path, capacity: int) -> None:
        """Open (or create) the file; events left by an earlier process are kept."""
        self.capacity = capacity
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS events ("
            "seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE NOT NULL, body TEXT)"
        )
        self._count: int = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def put(self, event: QueuedEvent) -> bool:
        """Add and commit `event` unless the queue is full."""
        with self._lock:
            if self._count >= self.capacity:
                return False
            self._db.execute(
                "INSERT INTO events (event_id, body) VALUES (?, ?)", (event.event_id, event.body)
            )
            self._count += 1
            return True

    def peek(self, max_events: int) -> list[QueuedEvent]:
        """The oldest events that fit one batch."""
        with self._lock:
            rows = self._db.execute(
                "SELECT event_id, body FROM events ORDER BY seq LIMIT ?", (max_events,)
            ).fetchall()
        return _fits((QueuedEvent(event_id, body) for event_id, body in rows), max_events)

    def remove(self, event_ids: Iterable[str]) -> None:
        """Delete these events in one transaction."""
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN")
            self._db.executemany(
                "DELETE FROM events WHERE event_id = ?", [(event_id,) for event_id in event_ids]
            )
            self._db.execute("COMMIT")
            self._count -= self._db.total_changes - before

    def __len__(self) -> int:
        """Events held."""
        return self._count

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()


def open_queue(durable_path: Path | None, capacity: int) -> EventQueue:
    """The queue a client's settings ask for."""
    if durable_path is None:
        return MemoryQueue(capacity)
    return SqliteQueue(durable_path, capacity)
