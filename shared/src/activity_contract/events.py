"""The only event schema: HTTP input (`ActivityIn`), queue message, read model."""

import json
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from uuid import UUID, uuid4

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
)

MAX_USER_ID_LENGTH = 128
MAX_EVENT_TYPE_LENGTH = 64
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 8
MAX_FUTURE_SKEW = timedelta(hours=24)
MAX_BATCH_EVENTS = 500


def _no_control_characters(value: str) -> str:
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ValueError("must not contain control characters")
    return value


def _depth(value: JsonValue) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


def _bounded_metadata(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes serialized, got {size}")
    if _depth(value) > MAX_METADATA_DEPTH:
        raise ValueError(f"must be at most {MAX_METADATA_DEPTH} levels deep")
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
    return value.astimezone(UTC)


def _not_far_future(value: datetime) -> datetime:
    if value > datetime.now(UTC) + MAX_FUTURE_SKEW:
        raise ValueError("must be at most 24 hours in the future")
    return value


UserId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_USER_ID_LENGTH),
    AfterValidator(_no_control_characters),
    Field(description="The user the event belongs to: 1-128 characters, no control characters."),
]
EventType = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=MAX_EVENT_TYPE_LENGTH, pattern=r"^[A-Za-z][A-Za-z0-9_.:-]*$"
    ),
    Field(description="What happened, for example `page_view` or `cart:add`."),
]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
Metadata = Annotated[
    dict[str, JsonValue],
    AfterValidator(_bounded_metadata),
    Field(description="Free-form JSON object: at most 16 KiB serialized, 8 levels deep."),
]


class ActivityIn(BaseModel):
    """One activity event as a client posts it."""

    model_config = ConfigDict(extra="forbid")

    event_id: UUID | None = Field(
        default=None,
        description="Client idempotency key; the server assigns a UUID when absent.",
    )
    user_id: UserId
    event_type: EventType
    timestamp: (
        Annotated[UtcDatetime, BeforeValidator(_rfc3339_text), AfterValidator(_not_far_future)]
        | None
    ) = Field(
        default=None,
        description="When it happened (RFC 3339 with offset, at most 24 h ahead); "
        "defaults to the time received.",
    )
    metadata: Metadata = Field(default_factory=dict)

    def to_message(self, received_at: datetime) -> "ActivityMessage":
        """The queue message for this event, with its final id and timestamp."""
        return ActivityMessage(
            event_id=self.event_id or uuid4(),
            user_id=self.user_id,
            event_type=self.event_type,
            timestamp=self.timestamp or received_at,
            metadata=self.metadata,
            received_at=received_at,
        )


class ActivityBatchIn(BaseModel):
    """A batch of events, validated all-or-nothing."""

    model_config = ConfigDict(extra="forbid")

    events: list[ActivityIn] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


class ActivityMessage(BaseModel):
    """The message on queue `user_activities`: a validated event plus receipt data."""

    model_config = ConfigDict(extra="forbid")

    event_id: UUID = Field(description="Event identity; also the AMQP `message_id`.")
    user_id: UserId
    event_type: EventType
    timestamp: UtcDatetime = Field(description="When the event happened, UTC.")
    metadata: Metadata = Field(default_factory=dict)
    received_at: UtcDatetime = Field(description="When ingest received the event, UTC.")
    schema_version: Literal[1] = Field(default=1, description="Version of this message schema.")


class ActivityOut(BaseModel):
    """One stored event as the read API returns it."""

    event_id: UUID
    user_id: str
    event_type: str
    timestamp: datetime
    metadata: dict[str, JsonValue]
    received_at: datetime
    processed_at: datetime
