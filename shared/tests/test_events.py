"""The event schema's rules: what ingest accepts, what travels on the queue."""

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from pydantic import ValidationError

from activity_contract.events import (
    QUEUE_MESSAGE,
    ActivityBatchIn,
    ActivityGroupMessage,
    ActivityIn,
    ActivityMessage,
    UnreadableEvent,
    corrected_timestamp,
    metadata_size,
    read_queue_message,
)
from activity_testing.events import event_payload


def error_types(payload: dict[str, Any]) -> dict[tuple[str | int, ...], str]:
    with pytest.raises(ValidationError) as caught:
        ActivityIn.model_validate(payload)
    return {tuple(error["loc"]): error["type"] for error in caught.value.errors()}


def test_minimal_event_gets_defaults() -> None:
    event = ActivityIn.model_validate({"user_id": "u", "event_type": "login"})
    assert event.event_id is None
    assert event.timestamp is None
    assert event.metadata == {}


def test_user_id_is_trimmed() -> None:
    assert ActivityIn.model_validate(event_payload(user_id="  bob \t")).user_id == "bob"


@pytest.mark.parametrize(
    "user_id",
    [
        "",
        "   ",
        "x" * 129,
        "a\x00b",
        "line\nbreak",
        "tab\there",
        "zero\u200bwidth",
        "bidi\u202eoverride",
        "line\u2028separator",
        "para\u2029separator",
        "bom\ufeff",
    ],
)
def test_bad_user_ids_are_rejected(user_id: str) -> None:
    assert ("user_id",) in error_types(event_payload(user_id=user_id))


def test_user_id_is_at_most_128_characters_as_sent_as_its_schema_says() -> None:
    assert len(ActivityIn.model_validate(event_payload(user_id=f" {'x' * 126} ")).user_id) == 126
    assert len(ActivityIn.model_validate(event_payload(user_id="x" * 128)).user_id) == 128
    # Found by the schema fuzzing: 128 once trimmed, but 129 as sent, against a maxLength 128.
    sent = f"\f{'x' * 128}"
    assert error_types(event_payload(user_id=sent)) == {("user_id",): "string_too_long"}


@pytest.mark.parametrize("event_type", ["login", "cart:add", "a.b-c_d", "A" * 64])
def test_good_event_types(event_type: str) -> None:
    assert ActivityIn.model_validate(event_payload(event_type=event_type)).event_type == event_type


@pytest.mark.parametrize("event_type", ["", "1login", "_x", "has space", "é", "A" * 65])
def test_bad_event_types(event_type: str) -> None:
    assert ("event_type",) in error_types(event_payload(event_type=event_type))


def test_event_id_must_be_a_uuid() -> None:
    assert error_types(event_payload(event_id="not-a-uuid")) == {("event_id",): "uuid_parsing"}
    given = "6f1c2c8e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
    assert ActivityIn.model_validate(event_payload(event_id=given)).event_id == UUID(given)


def test_timestamp_needs_an_offset_and_is_converted_to_utc() -> None:
    assert error_types(event_payload(timestamp="2026-01-01T10:00:00")) == {
        ("timestamp",): "timezone_aware"
    }
    event = ActivityIn.model_validate(event_payload(timestamp="2026-01-01T10:00:00+02:00"))
    assert event.timestamp == datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert event.timestamp is not None
    assert event.timestamp.utcoffset() == timedelta(0)


def test_timestamp_at_most_24_hours_ahead() -> None:
    soon = datetime.now(UTC) + timedelta(hours=23)
    assert ActivityIn.model_validate(event_payload(timestamp=soon.isoformat())).timestamp
    later = datetime.now(UTC) + timedelta(hours=25)
    assert ("timestamp",) in error_types(event_payload(timestamp=later.isoformat()))


def test_metadata_size_limit_is_16_kib_serialized() -> None:
    fits = {"k": "x" * (16 * 1024 - 8)}  # {"k":"…"} is 8 bytes of punctuation and key
    assert ActivityIn.model_validate(event_payload(metadata=fits)).metadata == fits
    too_big = {"k": "x" * (16 * 1024 - 7)}
    assert ("metadata",) in error_types(event_payload(metadata=too_big))


TRICKY_METADATA: list[dict[str, Any]] = [
    {},
    {"café": "naïve ☕ 日本語 😀", "quote": '"\\/\n\t\x00\x1f\u2028'},
    {"a": {"b": [1, {"c": [[], {}, None, True, False]}], "d": "\u00e9"}},
    {"f": [0.1, 1e16, 1.5e308, 5e-324, -0.0, 1e-7, 123456789.123456789, 2.5]},
    {"i": [2**63 - 1, -(2**63), 2**100, 0, -1]},
    {"not finite": [float("nan"), float("inf"), float("-inf")]},
]


@pytest.mark.parametrize("value", TRICKY_METADATA)
def test_metadata_size_is_what_json_dumps_measures(value: dict[str, Any]) -> None:
    """The measure both services apply is compact UTF-8 JSON as `json.dumps` writes it."""
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    assert metadata_size(value) == len(expected)


def test_metadata_depth_limit_is_8_levels() -> None:
    def nested(levels: int) -> dict[str, Any]:
        value: dict[str, Any] = {}
        for _ in range(levels - 1):
            value = {"n": value}
        return value

    assert ActivityIn.model_validate(event_payload(metadata=nested(8)))
    assert ("metadata",) in error_types(event_payload(metadata=nested(9)))
    assert ("metadata",) in error_types(event_payload(metadata={"a": [[[[[[[[1]]]]]]]]}))


def test_metadata_must_be_an_object() -> None:
    assert ("metadata",) in error_types(event_payload(metadata=[1, 2]))


def test_unknown_fields_are_rejected_by_name() -> None:
    assert error_types(event_payload(colour="red")) == {("colour",): "extra_forbidden"}


def test_batch_size_is_1_to_500() -> None:
    with pytest.raises(ValidationError):
        ActivityBatchIn.model_validate({"events": []})
    with pytest.raises(ValidationError):
        ActivityBatchIn.model_validate({"events": [event_payload()] * 501})
    assert len(ActivityBatchIn.model_validate({"events": [event_payload()] * 500}).events) == 500


def test_to_message_fills_event_id_and_timestamp() -> None:
    received = datetime(2026, 5, 1, 12, tzinfo=UTC)
    message = ActivityIn.model_validate(event_payload()).to_message(received_at=received)
    assert isinstance(message.event_id, UUID)
    assert message.timestamp == received
    assert message.received_at == received
    assert message.schema_version == 1


def test_to_message_keeps_client_values() -> None:
    given = "6f1c2c8e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
    event = ActivityIn.model_validate(
        event_payload(event_id=given, timestamp="2026-01-01T00:00:00Z")
    )
    message = event.to_message(received_at=datetime(2026, 5, 1, tzinfo=UTC))
    assert str(message.event_id) == given
    assert message.timestamp == datetime(2026, 1, 1, tzinfo=UTC)


def test_message_round_trips_through_json() -> None:
    message = ActivityIn.model_validate(event_payload()).to_message(datetime.now(UTC))
    assert ActivityMessage.model_validate_json(message.model_dump_json()) == message


def test_message_readers_are_tolerant() -> None:
    """A newer producer may add fields; the version is read, and judged by the processor."""
    message = ActivityIn.model_validate(event_payload()).to_message(datetime.now(UTC))
    data = message.model_dump(mode="json") | {"schema_version": 2, "added_later": {"x": 1}}
    read = ActivityMessage.model_validate(data)
    assert read.schema_version == 2
    assert read.event_id == message.event_id


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ('{"a": NaN}', "finite"),
        ('{"a": Infinity}', "finite"),
        ('{"a": -Infinity}', "finite"),
        ('{"a": 1e400}', "finite"),
        ('{"a": [1, {"b": -1e400}]}', "finite"),
        ('{"a": 9223372036854775808}', "64-bit"),
        ('{"a": -9223372036854775809}', "64-bit"),
        ('{"n": 1180591620717411303424}', "64-bit"),
        ('{"a\\u0000b": 1}', "NUL"),
        ('{"a": {"b\\u0000": 1}}', "NUL"),
    ],
)
def test_metadata_the_database_cannot_store_is_refused(metadata: str, problem: str) -> None:
    body = f'{{"user_id": "u", "event_type": "t", "metadata": {metadata}}}'
    with pytest.raises(ValidationError) as caught:
        ActivityIn.model_validate_json(body)
    [error] = caught.value.errors()
    assert error["loc"] == ("metadata",)
    assert problem in error["msg"]


def test_metadata_at_the_integer_and_size_limits_is_accepted() -> None:
    metadata = (
        '{"a": 9223372036854775807, "b": -9223372036854775808, "c": 1.5e308, '
        '"d": "\\u0000 in a value is fine"}'
    )
    body = f'{{"user_id": "u", "event_type": "t", "metadata": {metadata}}}'
    assert ActivityIn.model_validate_json(body).metadata["a"] == 2**63 - 1


def test_what_ingest_accepts_the_processor_accepts_byte_for_byte() -> None:
    """The size limit is measured on the same values on both sides (no NaN to become null)."""
    fits = {"k": "x" * (16 * 1024 - 8)}
    message = ActivityIn.model_validate(event_payload(metadata=fits)).to_message(datetime.now(UTC))
    assert ActivityMessage.model_validate_json(message.model_dump_json()).metadata == fits


@pytest.mark.parametrize(
    "timestamp",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "1700000000", 1700000000],
)
def test_timestamps_outside_utc_years_or_not_rfc3339_are_refused(timestamp: object) -> None:
    assert ("timestamp",) in error_types(event_payload(timestamp=timestamp))


def test_sent_at_corrects_a_clock_that_runs_ahead() -> None:
    received = datetime(2026, 6, 1, 12, tzinfo=UTC)
    event = ActivityIn.model_validate(
        event_payload(timestamp="2026-06-01T15:00:00Z", sent_at="2026-06-01T15:00:30Z"),
        context={"received_at": received},
    )
    message = event.to_message(received)
    assert message.timestamp == received - timedelta(seconds=30)
    assert message.original_timestamp == datetime(2026, 6, 1, 15, tzinfo=UTC)


def test_sent_at_corrects_a_clock_that_runs_behind() -> None:
    received = datetime(2026, 6, 1, 12, tzinfo=UTC)
    event = ActivityIn.model_validate(
        event_payload(timestamp="2026-06-01T07:59:00+00:00", sent_at="2026-06-01T08:00:00Z")
    )
    message = event.to_message(received)
    assert message.timestamp == received - timedelta(minutes=1)
    assert message.original_timestamp == datetime(2026, 6, 1, 7, 59, tzinfo=UTC)


def test_without_sent_at_nothing_is_corrected() -> None:
    received = datetime(2026, 6, 1, 12, tzinfo=UTC)
    message = ActivityIn.model_validate(event_payload(timestamp="2026-06-01T07:00:00Z")).to_message(
        received
    )
    assert message.timestamp == datetime(2026, 6, 1, 7, tzinfo=UTC)
    assert message.original_timestamp is None


def test_sent_at_without_timestamp_means_the_time_received() -> None:
    received = datetime(2026, 6, 1, 12, tzinfo=UTC)
    message = ActivityIn.model_validate(event_payload(sent_at="2020-01-01T00:00:00Z")).to_message(
        received
    )
    assert message.timestamp == received
    assert message.original_timestamp is None


@pytest.mark.parametrize(
    ("sent", "client_timestamp"),
    [
        ({}, None),
        ({"sent_at": "2020-01-01T00:00:00Z"}, None),
        ({"timestamp": "2026-06-01T07:00:00Z"}, datetime(2026, 6, 1, 7, tzinfo=UTC)),
        (
            {"timestamp": "2026-06-01T15:00:00Z", "sent_at": "2026-06-01T15:00:30Z"},
            datetime(2026, 6, 1, 15, tzinfo=UTC),
        ),
    ],
    ids=["none", "sent-at-only", "timestamp", "corrected"],
)
def test_the_message_tells_the_clients_own_timestamp_from_the_one_ingest_stamped(
    sent: dict[str, str], client_timestamp: datetime | None
) -> None:
    event = ActivityIn.model_validate(event_payload(**sent))
    first = event.to_message(datetime(2026, 6, 1, 12, tzinfo=UTC))
    retry = event.to_message(datetime(2026, 6, 1, 12, 5, tzinfo=UTC))
    assert first.timestamp_assigned is retry.timestamp_assigned is (client_timestamp is None)
    assert first.client_timestamp == retry.client_timestamp == client_timestamp
    read_back = ActivityMessage.model_validate_json(first.model_dump_json(exclude_none=True))
    assert read_back.client_timestamp == client_timestamp


def test_a_message_of_an_older_producer_had_its_timestamp_from_the_client() -> None:
    """Without the field the timestamp counts as the client's, as before it existed."""
    message = ActivityMessage.model_validate(
        event_payload(timestamp="2026-06-01T07:00:00Z")
        | {"event_id": str(uuid.uuid4()), "received_at": "2026-06-01T12:00:00Z"}
    )
    assert message.timestamp_assigned is False
    assert message.client_timestamp == datetime(2026, 6, 1, 7, tzinfo=UTC)


def test_the_future_rule_applies_to_the_corrected_timestamp() -> None:
    now = datetime.now(UTC)
    ahead = now + timedelta(hours=30)  # a clock 30 h fast: its own "now" is fine
    event = ActivityIn.model_validate(
        event_payload(timestamp=ahead.isoformat(), sent_at=ahead.isoformat())
    )
    assert event.to_message(now).timestamp == now
    later = now + timedelta(hours=25)  # 25 h ahead of the client's own clock
    assert ("timestamp",) in error_types(
        event_payload(timestamp=later.isoformat(), sent_at=now.isoformat())
    )


def test_a_correction_beyond_the_calendar_is_refused() -> None:
    assert ("timestamp",) in error_types(
        event_payload(timestamp="0001-01-01T00:00:00Z", sent_at="9999-12-31T00:00:00Z")
    )
    with pytest.raises(ValueError, match="years 1 to 9999"):
        corrected_timestamp(
            datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC), datetime.now(UTC)
        )


def test_both_message_kinds_are_told_apart() -> None:
    now = datetime.now(UTC)
    one = ActivityIn.model_validate(event_payload()).to_message(now, request_id="r1")
    two = ActivityIn.model_validate(event_payload()).to_message(now, request_id="r2")
    group = ActivityGroupMessage(group_id=uuid.uuid4(), events=[one, two])
    assert QUEUE_MESSAGE.validate_json(one.model_dump_json()) == one
    read = QUEUE_MESSAGE.validate_json(group.model_dump_json())
    assert isinstance(read, ActivityGroupMessage)
    assert [
        event.request_id if isinstance(event, ActivityMessage) else None for event in read.events
    ] == ["r1", "r2"]


def test_a_bad_event_of_a_group_is_kept_as_it_came_with_why() -> None:
    """One bad event does not make the group unreadable: the processor settles it alone."""
    good = ActivityIn.model_validate(event_payload()).to_message(datetime.now(UTC))
    missing = good.model_dump(mode="json") | {"event_id": str(uuid.uuid4())}
    del missing["user_id"]
    body = {"group_id": str(uuid.uuid4()), "events": [good.model_dump(mode="json"), missing, 7]}
    read = QUEUE_MESSAGE.validate_python(body)
    assert isinstance(read, ActivityGroupMessage)
    first, second, third = read.events
    assert first == good
    assert isinstance(second, UnreadableEvent)
    assert (second.raw, second.error) == (missing, "user_id: Field required")
    assert isinstance(third, UnreadableEvent)
    assert third.raw == 7
    with pytest.raises(ValidationError):  # the group itself must still be one
        QUEUE_MESSAGE.validate_python({"group_id": str(uuid.uuid4()), "events": []})


def _queued(**metadata: Any) -> bytes:
    """One event as ingest puts it on the queue."""
    event = ActivityIn.model_validate(event_payload(metadata=metadata))
    return event.to_message(datetime.now(UTC), request_id="r").model_dump_json().encode()


def _framed(*events: bytes, opening: str = '"schema_version":1,') -> bytes:
    """A group framed the way ingest frames one: its events' JSON inside a fixed opening."""
    return f'{{"group_id":"{uuid.uuid4()}",{opening}"events":['.encode() + b",".join(events) + b"]}"


def _with_key(body: bytes, key: str) -> bytes:
    """`body` (a JSON object) with one more top-level key, spelled `key` in the JSON."""
    return body[:-1] + f',"{key}":[{_queued().decode()}]}}'.encode()


def _reading(read: Callable[[bytes | str], object], body: bytes | str) -> object:
    """What `read` makes of `body`: the kind and contents, or the errors without URLs."""
    try:
        message = read(body)
    except ValidationError as error:
        return error.errors(include_url=False)
    if isinstance(message, ActivityGroupMessage):
        return ("activity_group", message.group_id, message.schema_version, message.events)
    return ("activity", message)


QUEUE_BODIES: dict[str, bytes | str] = {
    "one event": _queued(page="/é"),
    "one event as text": _queued().decode(),
    "a group as ingest frames it": _framed(_queued(), _queued(n=2**63 - 1)),
    "a group as the model writes it": _framed(_queued(), _queued(), opening=""),
    "a group with a bad event": _framed(_queued(), b'{"user_id":"u"}', b"7"),
    "a group of a newer schema": _framed(_queued(), opening='"schema_version":2,'),
    "a group with no events": _framed(),
    "a group with a bad id": _framed(_queued()).replace(b'"group_id":"', b'"group_id":"x', 1),
    "a group with its events first": json.dumps(
        {"events": [json.loads(_queued())], "group_id": str(uuid.uuid4())}
    ).encode(),
    "events inside metadata": _queued(events=[1, 2], note='"events"'),
    "an escape inside metadata": _queued(note="\x01"),
    "an event with an events key": _with_key(_queued(), "events"),
    "an event with an escaped events key": _with_key(_queued(), "\\u0065vents"),
    "a truncated group": _framed(_queued())[:60],
    "not JSON": b"{",
    "empty": b"",
    "a list": b"[]",
    "a number": b"7",
    "null": b"null",
}


@pytest.mark.parametrize("body", QUEUE_BODIES.values(), ids=QUEUE_BODIES.keys())
def test_read_queue_message_reads_as_the_queue_message_adapter(body: bytes | str) -> None:
    """Whatever shortcut the reader takes, the result and every error are the contract's."""
    assert _reading(read_queue_message, body) == _reading(QUEUE_MESSAGE.validate_json, body)
