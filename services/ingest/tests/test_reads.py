"""Cursor encoding and the MongoDB filter of a page request (no network)."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from ingest.reads import ActivityQuery, InvalidCursorError, Position

MS = timedelta(milliseconds=1)


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


def test_first_page_is_one_range_on_the_user_timeline() -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    until = since + timedelta(days=1)
    query = ActivityQuery(user_id="u", limit=5, event_type="click", since=since, until=until)
    assert query.filters() == [
        {"user_id": "u", "event_type": "click", "timestamp": {"$gt": since - MS, "$lt": until}}
    ]


def test_filter_without_options_selects_the_user_only() -> None:
    assert ActivityQuery(user_id="u", limit=1).filters() == [{"user_id": "u"}]


def test_after_a_cursor_first_the_ties_then_the_older_events() -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    until = since + timedelta(days=1)
    after = Position(since + timedelta(hours=1), uuid.uuid4())
    query = ActivityQuery(
        user_id="u", limit=5, event_type="click", since=since, until=until, after=after
    )
    assert query.filters() == [
        {
            "user_id": "u",
            "event_type": "click",
            "timestamp": after.timestamp,
            "_id": {"$lt": after.event_id},
        },
        {
            "user_id": "u",
            "event_type": "click",
            "timestamp": {"$gt": since - MS, "$lt": after.timestamp},
        },
    ]
    unbounded = ActivityQuery(user_id="u", limit=5, after=after)
    assert unbounded.filters() == [
        {"user_id": "u", "timestamp": after.timestamp, "_id": {"$lt": after.event_id}},
        {"user_id": "u", "timestamp": {"$lt": after.timestamp}},
    ]


@pytest.mark.parametrize(
    ("since_hours", "until_hours", "ties", "older"),
    [
        # The cursor (at hour 1) inside [since, until): its ties, then older events in range.
        (0, 2, True, (0, 1)),
        (1, 2, True, None),  # nothing older than the cursor is at or after `since`
        (2, 3, False, None),  # the cursor is before `since`: nothing is left
        (-1, 1, False, (-1, 1)),  # the cursor is at `until` (exclusive): no ties
        (-1, 0, False, (-1, 0)),  # the cursor is after `until`: `until` bounds
    ],
)
def test_cursor_and_range_combine(
    since_hours: int, until_hours: int, ties: bool, older: tuple[int, int] | None
) -> None:
    def at(hours: int) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=hours)

    after = Position(at(1), uuid.uuid4())
    query = ActivityQuery(
        user_id="u", limit=5, since=at(since_hours), until=at(until_hours), after=after
    )
    expected: list[dict[str, object]] = []
    if ties:
        expected.append({"user_id": "u", "timestamp": at(1), "_id": {"$lt": after.event_id}})
    if older is not None:
        expected.append(
            {"user_id": "u", "timestamp": {"$gt": at(older[0]) - MS, "$lt": at(older[1])}}
        )
    assert query.filters() == expected


@pytest.mark.parametrize(
    ("since", "bound"),
    [
        (datetime(2026, 1, 1, tzinfo=UTC), datetime(2025, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
        # Stored times are whole milliseconds: the fraction of one below counts for nothing.
        (datetime(2026, 1, 1, 0, 0, 0, 1999, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_since_is_inclusive_to_the_millisecond(since: datetime, bound: datetime) -> None:
    """`>= since` is sent as `> since - 1 ms`: SecantusDB loses the events exactly at a `$gte`
    bound on the descending timestamp of its index."""
    assert ActivityQuery(user_id="u", limit=1, since=since).filters() == [
        {"user_id": "u", "timestamp": {"$gt": bound}}
    ]


def test_since_at_the_first_representable_instant_bounds_nothing() -> None:
    since = datetime.min.replace(tzinfo=UTC)
    assert ActivityQuery(user_id="u", limit=1, since=since).filters() == [{"user_id": "u"}]


def test_no_filter_needs_an_operator_across_fields() -> None:
    """Plain equality and ranges only: a top-level `$or` (or `$and`) makes SecantusDB scan
    the whole collection instead of the user's index range."""
    after = Position(datetime(2026, 1, 1, tzinfo=UTC), uuid.uuid4())
    query = ActivityQuery(
        user_id="u",
        limit=5,
        event_type="click",
        since=after.timestamp - timedelta(days=1),
        until=after.timestamp + timedelta(days=1),
        after=after,
    )
    for query_filter in query.filters():
        assert not [field for field in query_filter if field.startswith("$")]
        assert next(iter(query_filter)) == "user_id"
