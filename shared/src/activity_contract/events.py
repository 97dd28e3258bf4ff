"""The event schemas: the HTTP input, the message kinds on the queue, the read model.

Every rule an event must meet lives here once, so that nothing ingest accepts can fail
the processor's validation of the same event, nor the database's encoding of it.
"""

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID, uuid4

from pydantic import (
    AfterValidator,
    AliasChoices,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    InstanceOf,
    JsonValue,
    StringConstraints,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticKnownError

MAX_USER_ID_LENGTH = 128
MAX_EVENT_TYPE_LENGTH = 64
EVENT_TYPE_PATTERN = r"^[A-Za-z][A-Za-z0-9_.:-]*$"
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 8
MAX_FUTURE_SKEW = timedelta(hours=24)
MAX_BATCH_EVENTS = 500
# The message schema version this code writes and reads.
SCHEMA_VERSION = 1
# MongoDB stores integers as signed 64-bit at most (BSON int64).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Unicode categories refused in user ids: control (Cc), format (Cf: zero-width and
# bidirectional overrides), line and paragraph separators (Zl, Zp). Look-alike ids and
# ids that break log lines are refused.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def _visible_characters_only(value: str) -> str:
    if not value.isprintable() and any(
        unicodedata.category(char) in _INVISIBLE_CATEGORIES for char in value
    ):
        raise ValueError(
            "must not contain control, format (zero-width, bidirectional) or separator characters"
        )
    return value


# Unicode's White_Space characters: what a user id is trimmed of (Python's `str.strip()`
# would also take the control characters U+001C-U+001F, which ids refuse).
_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def _trimmed_visible_user_id(value: str) -> str:
    """The id trimmed, non-empty, every character visible; its length was checked as sent.

    The schema's maxLength counts what the client sends, so trimming comes after it.
    """
    trimmed = value.strip(_WHITESPACE)
    if not trimmed:
        raise PydanticKnownError("string_too_short", {"min_length": 1})
    return _visible_characters_only(trimmed)


def _check_json_values(value: JsonValue) -> None:
    """Refuse what MongoDB cannot store or JSON cannot express; enforce the depth limit.

    Iterative, so a deep value cannot exhaust the stack before its depth is refused.
    """
    stack: list[tuple[JsonValue, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > MAX_METADATA_DEPTH:
                raise ValueError(f"must be at most {MAX_METADATA_DEPTH} levels deep")
            for key, child in item.items():
                if "\x00" in key:
                    raise ValueError(f"keys must not contain the NUL character: {key!r}")
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1))
                else:
                    _check_scalar(child)
        elif isinstance(item, list):
            if depth > MAX_METADATA_DEPTH:
                raise ValueError(f"must be at most {MAX_METADATA_DEPTH} levels deep")
            for child in item:
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1))
                else:
                    _check_scalar(child)


def _check_scalar(value: JsonValue) -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite (NaN, Infinity and overflowing numbers)")
    elif (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not INT64_MIN <= value <= INT64_MAX
    ):
        raise ValueError("integers must fit in a signed 64-bit integer")


# What `json.dumps(value, separators=(",", ":"), ensure_ascii=False)` builds on every
# call (it keeps only its default encoder); made once, it writes the same text.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def metadata_size(value: dict[str, JsonValue]) -> int:
    """Bytes of `value` as compact UTF-8 JSON: the one measure both services apply."""
    return len(_COMPACT_JSON.encode(value).encode())


def _storable_metadata(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    _check_json_values(value)
    size = metadata_size(value)
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes serialized, got {size}")
    return value


# RFC 3339 date-time; the offset is optional here only so that a naive value gets
# AwareDatetime's own "needs an offset" error rather than a vaguer one.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$")


def _rfc3339_text(value: object) -> object:
    """Refuse what Pydantic's lax mode would read as a date-time: numbers, epoch strings."""
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC3339.match(value)):
        return value
    raise ValueError("must be an RFC 3339 date-time string such as 2026-01-02T03:04:05Z")


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise ValueError("is outside the years 1 to 9999 once converted to UTC") from None


UserId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_USER_ID_LENGTH),
    AfterValidator(_trimmed_visible_user_id),
    Field(
        description="The user the event belongs to: at most 128 characters as sent, at least "
        "1 once trimmed of surrounding whitespace; no control, format or line-separator "
        "characters."
    ),
]
EventType = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_EVENT_TYPE_LENGTH, pattern=EVENT_TYPE_PATTERN),
    Field(description="What happened, for example `page_view` or `cart:add`."),
]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
# A date-time a client sends: RFC 3339 text with an offset, in the years 1-9999 in UTC.
Rfc3339Datetime = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text), AfterValidator(_utc)]
Metadata = Annotated[
    dict[str, JsonValue],
    AfterValidator(_storable_metadata),
    Field(
        description="Free-form JSON object: at most 16 KiB serialized, 8 levels deep; "
        "numbers finite, integers within signed 64 bits, keys without NUL."
    ),
]


def corrected_timestamp(timestamp: datetime, sent_at: datetime, received_at: datetime) -> datetime:
    """The client's `timestamp` moved by its clock's offset: received_at - (sent_at - timestamp).

    Raises `ValueError` when the result is outside the representable years.
    """
    try:
        return received_at - (sent_at - timestamp)
    except OverflowError:
        raise ValueError("is outside the years 1 to 9999 once corrected by sent_at") from None


def client_timestamp(
    timestamp: datetime | None, original_timestamp: datetime | None, timestamp_assigned: bool
) -> datetime | None:
    """The `timestamp` the client itself sent for an event (None when it sent none).

    What ingest stamps differs from one try of an event to the next, the receipt time when
    the client sent no timestamp and the `sent_at` correction when it did; the client's own
    value does not. Read from a message's fields or from a stored document's alike.
    """
    if original_timestamp is not None:
        return original_timestamp
    return None if timestamp_assigned else timestamp


class ActivityIn(BaseModel):
    """One activity event as a client posts it."""

    model_config = ConfigDict(extra="forbid")

    event_id: UUID | None = Field(
        default=None,
        description="Client idempotency key; the server assigns a UUID when absent. "
        "Retry with the same id: an id is stored once, the first content wins.",
    )
    user_id: UserId
    event_type: EventType
    sent_at: Rfc3339Datetime | None = Field(
        default=None,
        description="The client's clock when it sent the request (RFC 3339 with offset). "
        "With it the server corrects `timestamp` for the client's clock offset: "
        "timestamp = received_at - (sent_at - timestamp).",
    )
    timestamp: Rfc3339Datetime | None = Field(
        default=None,
        description="When it happened (RFC 3339 with offset, at most 24 h ahead once "
        "corrected); defaults to the time received.",
    )
    metadata: Metadata = Field(default_factory=dict)

    @field_validator("timestamp")
    @classmethod
    def _not_far_future(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is None:
            return value
        # The request's receipt time when the caller passes it, so one clock reading
        # serves the check and the correction (`to_message`).
        now = (info.context or {}).get("received_at") or datetime.now(UTC)
        sent_at = info.data.get("sent_at")
        effective = value if sent_at is None else corrected_timestamp(value, sent_at, now)
        if effective > now + MAX_FUTURE_SKEW:
            corrected = "" if sent_at is None else " once corrected by sent_at"
            raise ValueError(f"must be at most 24 hours in the future{corrected}")
        return value

    def to_message(self, received_at: datetime, request_id: str | None = None) -> "ActivityMessage":
        """The queue message for this event, with its final id and timestamp."""
        timestamp, original = received_at, None
        if self.timestamp is not None:
            timestamp = self.timestamp
            if self.sent_at is not None:
                original = self.timestamp
                timestamp = corrected_timestamp(self.timestamp, self.sent_at, received_at)
        # Every value is validated already (this model's own rules are the message's).
        return ActivityMessage.model_construct(
            event_id=self.event_id or uuid4(),
            user_id=self.user_id,
            event_type=self.event_type,
            timestamp=timestamp,
            original_timestamp=original,
            timestamp_assigned=self.timestamp is None,
            metadata=self.metadata,
            received_at=received_at,
            request_id=request_id,
        )


class ActivityBatchIn(BaseModel):
    """A batch of events, validated all-or-nothing."""

    model_config = ConfigDict(extra="forbid")

    events: list[ActivityIn] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


class PlanViolation(BaseModel):
    """How an event departs from the tracking plan (docs/tracking-plan.md)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    path: str = Field(
        description="JSON Pointer to the offending value in the event, e.g. "
        "`/metadata/price` (`/event_type` for an unplanned event type)."
    )
    rule: str = Field(
        description="The JSON Schema keyword it fails (`type`, `required`, ...), or "
        "`unplanned_event`."
    )
    message: str = Field(description="What is wrong, for people.")


class ActivityMessage(BaseModel):
    """One event on queue `user_activities`: a validated event plus receipt data.

    Travels alone (message kind `activity`) or inside an `ActivityGroupMessage`. Readers
    are tolerant: unknown fields are ignored, so a newer producer may add some.
    """

    model_config = ConfigDict(extra="ignore")

    event_id: UUID = Field(description="Event identity; the stored `_id`.")
    user_id: UserId
    event_type: EventType
    timestamp: UtcDatetime = Field(description="When the event happened, UTC (corrected).")
    original_timestamp: UtcDatetime | None = Field(
        default=None,
        description="The client's own `timestamp` when it sent `sent_at` and the server "
        "corrected it; absent otherwise.",
    )
    timestamp_assigned: bool = Field(
        default=False,
        description="True when the client sent no `timestamp` and `timestamp` is the time "
        "ingest received the event: a retry of the event is then recognised by its other "
        "fields. False (the default, and what older producers imply): the client sent it.",
    )
    metadata: Metadata = Field(default_factory=dict)
    received_at: UtcDatetime = Field(description="When ingest received the event, UTC.")
    request_id: str | None = Field(
        default=None,
        description="The HTTP request that carried the event. A one-event message also "
        "carries it as the AMQP `correlation_id`.",
    )
    schema_version: int = Field(
        default=SCHEMA_VERSION, description="Version of this message schema (1)."
    )
    plan_violations: list[PlanViolation] | None = Field(
        default=None,
        description="Where the event departs from the tracking plan, when the plan is "
        "enforced with `warn` (stored with the event); absent when it meets the plan, when "
        "no plan is configured, and from older producers' messages.",
    )

    @property
    def client_timestamp(self) -> datetime | None:
        """The `timestamp` the client itself sent (None when it sent none)."""
        return client_timestamp(self.timestamp, self.original_timestamp, self.timestamp_assigned)


@dataclass(frozen=True)
class UnreadableEvent:
    """An event of a group that is not an `ActivityMessage`: kept as it came, with why.

    Reading a group never fails for one bad event: the processor dead-letters this one
    alone and stores the others.
    """

    raw: Any
    error: str


def _read_or_keep(value: Any, read: ValidatorFunctionWrapHandler) -> Any:
    if isinstance(value, UnreadableEvent | ActivityMessage):
        return value
    try:
        return read(value)
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(part) for part in problem['loc'][1:]) or 'event'}: {problem['msg']}"
            for problem in error.errors(include_url=False, include_input=False)
            if problem["loc"][:1] == ("ActivityMessage",)
        ]
        return UnreadableEvent(value, "; ".join(problems) or "not an event object")


# One event of a group as read from the queue: an `ActivityMessage` (the contract, and
# all the schema says), or an `UnreadableEvent` when it does not meet it.
GroupEvent = Annotated[
    ActivityMessage | SkipJsonSchema[InstanceOf[UnreadableEvent]], WrapValidator(_read_or_keep)
]


class ActivityGroupMessage(BaseModel):
    """Several events in one message (kind `activity_group`), each keeping its own identity.

    Ingest groups the events of a batch request, and of concurrent requests that share
    one publish, so that RabbitMQ and the processor pay their per-message cost once.
    """

    model_config = ConfigDict(extra="ignore")

    group_id: UUID = Field(description="The group's own id; also the AMQP `message_id`.")
    events: list[GroupEvent] = Field(min_length=1)
    schema_version: int = Field(
        default=SCHEMA_VERSION, description="Version of this message schema (1)."
    )


def _message_kind(value: Any) -> str:
    has_events = "events" in value if isinstance(value, dict) else hasattr(value, "events")
    return "activity_group" if has_events else "activity"


# What the processor reads from the queue: either kind, told apart by the `events` field.
QueueMessage = Annotated[
    Annotated[ActivityMessage, Tag("activity")]
    | Annotated[ActivityGroupMessage, Tag("activity_group")],
    Discriminator(_message_kind),
]
QUEUE_MESSAGE: TypeAdapter[ActivityMessage | ActivityGroupMessage] = TypeAdapter(QueueMessage)


class _ReadableGroup(ActivityGroupMessage):
    """A group whose every event is readable.

    The common case, read in one pass without a wrap validator around every event (a
    quarter to a third less CPU per event than reading each event on its own).
    """

    events: list[ActivityMessage] = Field(min_length=1)  # type: ignore[assignment]


_READABLE_MESSAGE: TypeAdapter[ActivityMessage | ActivityGroupMessage] = TypeAdapter(
    Annotated[
        Annotated[ActivityMessage, Tag("activity")]
        | Annotated[_ReadableGroup, Tag("activity_group")],
        Discriminator(_message_kind),
    ]
)


# The opening of a group as ingest frames it, or as the model writes it: the top-level
# `events` key, reached past a `group_id` without escapes and an optional `schema_version`.
_GROUP_OPENING = re.compile(rb'\{"group_id":"[^"\\]*",(?:"schema_version":\d+,)?"events":\[')
# Without these bytes a JSON text holds no key `events`: spelled otherwise, a key needs a
# \u escape.
_EVENTS_KEY, _UNICODE_ESCAPE = b'"events"', b"\\u"
# The model each message kind is read with when every event is readable.
_READABLE_MODELS: dict[str, type[ActivityMessage | ActivityGroupMessage]] = {
    "activity": ActivityMessage,
    "activity_group": _ReadableGroup,
}


def _raw_message_kind(body: bytes | str) -> str | None:
    """The kind `_message_kind` finds once `body` is parsed, told from its bytes; None if unsure.

    Parsing the whole message into Python objects only to look for one key costs a share
    of reading it; the common bodies tell their kind by their opening or by lacking the key.
    """
    if not isinstance(body, bytes):
        return None
    if _GROUP_OPENING.match(body):
        return "activity_group"
    if _EVENTS_KEY not in body and _UNICODE_ESCAPE not in body:
        return "activity"
    return None


def _read_readable(body: bytes | str) -> ActivityMessage | ActivityGroupMessage:
    """A message whose every event is readable: by its kind's model when the bytes tell it."""
    kind = _raw_message_kind(body)
    if kind is None:
        return _READABLE_MESSAGE.validate_json(body)
    return _READABLE_MODELS[kind].model_validate_json(body)


def read_queue_message(body: bytes | str) -> ActivityMessage | ActivityGroupMessage:
    """A queue message as `QUEUE_MESSAGE` reads it; raises its `ValidationError` if unreadable.

    Tried first as a message whose every event is readable; only when that fails is each
    event of a group read on its own, so one bad event is kept apart (`UnreadableEvent`).
    """
    try:
        return _read_readable(body)
    except ValidationError:
        return QUEUE_MESSAGE.validate_json(body)


class StoredActivity(BaseModel):
    """The fields of a stored event (design §7) that the read API returns.

    The processor's Beanie document and the read model both build on this one definition.
    """

    user_id: str
    event_type: str
    timestamp: datetime = Field(description="When it happened, UTC (corrected by `sent_at`).")
    original_timestamp: datetime | None = Field(
        default=None, description="The client's own timestamp when `sent_at` corrected it."
    )
    metadata: dict[str, JsonValue]
    received_at: datetime = Field(description="When ingest accepted it, UTC.")
    processed_at: datetime = Field(description="When the processor stored it, UTC.")


class ActivityOut(StoredActivity):
    """One stored event as the read API returns it (read from the document as stored)."""

    event_id: UUID = Field(validation_alias=AliasChoices("event_id", "_id"))
