"""Cursor encoding and the MongoDB filter of a page request (no network)."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from ingest.reads import ActivityQuery, InvalidCursorError, Position


def test_cursor_round_trips_exactly_to_the_millisecond() -> None:
    position = Position(datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC), uuid.uuid4())
    assert Position.decode(position.encode()) == position


def test_cursor_is_opaque_url_safe_text() -> None:
    cursor = Position(datetime(2026, 1, 1, tzinfo=UTC), uuid.uuid4()).encode()
    assert cursor.isascii()
    assert not set(cursor) & set("+/=&?#")


@pytest.mark.parametrize(
    "cursor",
    ["", "not-a-cursor", "e30", "eyJ0IjoiYSIsImlkIjoiYiJ9", "!!!!", "eyJ0IjoxLCJpZCI6Inh5eiJ9"],
)
def test_foreign_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursorError):
        Position.decode(cursor)


def test_filter_combines_every_condition() -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    until = since + timedelta(days=1)
    after = Position(since + timedelta(hours=1), uuid.uuid4())
    query = ActivityQuery(
        user_id="u", limit=5, event_type="click", since=since, until=until, after=after
    )
    assert query.filter() == {
        "user_id": "u",
        "event_type": "click",
        "timestamp": {"$gte": since, "$lt": until},
        "$or": [
            {"timestamp": {"$lt": after.timestamp}},
            {"timestamp": after.timestamp, "_id": {"$lt": after.event_id}},
        ],
    }


def test_filter_without_options_selects_the_user_only() -> None:
    assert ActivityQuery(user_id="u", limit=1).filter() == {"user_id": "u"}
