"""Reading a user's stored activity from MongoDB (SPEC §3.3), page by page.

Ingest never imports the processor: it reads collection `activities` through the index
the processor creates (names shared in `activity_contract.storage`). Pages are ordered
newest first by `timestamp`, then by event id, so a cursor (the last item's position)
never skips nor repeats an event, even among equal timestamps.
"""

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pymongo import AsyncMongoClient
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.errors import PyMongoError

from activity_contract.events import ActivityOut
from activity_contract.storage import ACTIVITIES_COLLECTION, USER_TIMELINE_INDEX
from ingest.http.errors import DatabaseUnavailableError

logger = logging.getLogger(__name__)

# Bounded so a lost database turns into a quick 503, not a hanging request.
SERVER_SELECTION_TIMEOUT_MS = 2000
CONNECT_TIMEOUT_MS = 2000
OPERATION_TIMEOUT_MS = 5000

Document = dict[str, Any]
NEWEST_FIRST = [("timestamp", -1), ("_id", -1)]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


class InvalidCursorError(ValueError):
    """The cursor was not produced by this API."""


@dataclass(frozen=True)
class Position:
    """Where a page ended: the last item's timestamp and event id."""

    timestamp: datetime
    event_id: UUID

    def encode(self) -> str:
        """The opaque cursor for this position."""
        millis = (self.timestamp - _EPOCH) // _MILLISECOND  # MongoDB stores milliseconds
        raw = json.dumps({"t": millis, "id": self.event_id.hex}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> "Position":
        """The position in `cursor`; `InvalidCursorError` unless this API made it."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            data = json.loads(raw)
            millis, event_id = data["t"], data["id"]
            if not isinstance(millis, int) or not isinstance(event_id, str):
                raise InvalidCursorError("cursor fields have the wrong type")
            return cls(_EPOCH + millis * _MILLISECOND, UUID(hex=event_id))
        except (
            binascii.Error,
            ValueError,  # includes UnicodeDecodeError and JSONDecodeError
            KeyError,
            TypeError,
            OverflowError,
        ) as error:
            raise InvalidCursorError("not a cursor of this API") from error


@dataclass(frozen=True)
class ActivityQuery:
    """One page request: whose events, which of them, how many, from where."""

    user_id: str
    limit: int
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: Position | None = None

    def filter(self) -> Document:
        """The MongoDB filter: `since` inclusive, `until` exclusive, strictly after `after`."""
        query: Document = {"user_id": self.user_id}
        if self.event_type is not None:
            query["event_type"] = self.event_type
        bounds: Document = {}
        if self.since is not None:
            bounds["$gte"] = self.since
        if self.until is not None:
            bounds["$lt"] = self.until
        if bounds:
            query["timestamp"] = bounds
        if self.after is not None:
            query["$or"] = [
                {"timestamp": {"$lt": self.after.timestamp}},
                {"timestamp": self.after.timestamp, "_id": {"$lt": self.after.event_id}},
            ]
        return query


@dataclass(frozen=True)
class ActivityPage:
    """Up to `limit` events and the cursor of the next page (None on the last page)."""

    items: list[ActivityOut]
    next_cursor: str | None


def _to_out(document: Document) -> ActivityOut:
    return ActivityOut(
        event_id=document["_id"],
        user_id=document["user_id"],
        event_type=document["event_type"],
        timestamp=document["timestamp"],
        original_timestamp=document.get("original_timestamp"),
        metadata=document.get("metadata", {}),
        received_at=document["received_at"],
        processed_at=document["processed_at"],
    )


class ActivityReader:
    """Reads pages of activity; never used on the write path."""

    def __init__(self, url: str, database: str) -> None:
        """Prepare a client for `url` (it connects on first use)."""
        self._client: AsyncMongoClient[Document] = AsyncMongoClient(
            url,
            tz_aware=True,
            uuidRepresentation="standard",
            serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
            connectTimeoutMS=CONNECT_TIMEOUT_MS,
            timeoutMS=OPERATION_TIMEOUT_MS,
        )
        self._collection = self._client[database][ACTIVITIES_COLLECTION]

    @property
    def client(self) -> AsyncMongoClient[Document]:
        """The MongoDB client (erasure shares it)."""
        return self._client

    def find(self, query: ActivityQuery) -> AsyncCursor[Document]:
        """The MongoDB cursor of one page plus one document (which says if more follow).

        The hint pins the user timeline index, which serves both the filter and the sort.
        """
        return (
            self._collection.find(query.filter())
            .sort(NEWEST_FIRST)
            .hint(USER_TIMELINE_INDEX)
            .limit(query.limit + 1)
        )

    async def page(self, query: ActivityQuery) -> ActivityPage:
        """One page, newest first; `DatabaseUnavailableError` when MongoDB does not answer."""
        try:
            documents = await self.find(query).to_list()
        except PyMongoError as error:
            logger.warning("read failed", extra={"error_type": type(error).__name__})
            raise DatabaseUnavailableError from error
        items = [_to_out(document) for document in documents[: query.limit]]
        next_cursor = None
        if len(documents) > query.limit:
            last = items[-1]
            next_cursor = Position(last.timestamp, last.event_id).encode()
        return ActivityPage(items, next_cursor)

    async def is_available(self) -> bool:
        """Whether MongoDB answers a ping right now."""
        try:
            await self._client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    async def close(self) -> None:
        """Close the client's connections."""
        await self._client.close()
