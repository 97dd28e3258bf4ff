"""Reading a user's stored activity from MongoDB (design §3.3), page by page.

Ingest never imports the processor: it queries collection `activities` through Beanie
(`StoredEvent.find(...).sort(...).limit(...).project(ActivityItem)`), whose indexes the
processor creates (names shared in `activity_contract.storage`). Pages are ordered newest
first by `timestamp`, then by event id, so a cursor (the last item's position) never skips
nor repeats an event, even among equal timestamps.

Every query has the one shape both MongoDB's planner and SecantusDB's (the embedded
development server) serve from the `user_timeline` index `(user_id, timestamp -1, _id -1)`:
equality on `user_id`, a plain range on `timestamp` (equality on `timestamp` and a range on
`_id` for the events that tie with the cursor), sorted like the index. No hint: SecantusDB
executes a hinted query by reading the whole index (time linear in the collection), and a
top-level `$or` makes it scan the whole collection. Nor does a query depend on the index
existing: before the processor has ever run, a read finds no collection and an empty page.
"""

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pymongo
from beanie import Document, init_beanie
from beanie.odm.queries.find import FindMany
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from activity_contract.events import ActivityOut
from activity_contract.storage import ACTIVITIES_COLLECTION
from ingest.domain_errors import DatabaseUnavailableError

logger = logging.getLogger(__name__)

# Bounded so a lost database turns into a quick 503, not a hanging request.
SERVER_SELECTION_TIMEOUT_MS = 2000
CONNECT_TIMEOUT_MS = 2000
# The whole of one page read, server selection included. PyMongo sends the time left as the
# server's `maxTimeMS`, so a read over budget is stopped on the server too (it cannot hold
# the database's resources), and the client answers 503. A page takes milliseconds: about
# 10 ms for a user with hundreds of events among 250,000 stored on SecantusDB.
READ_TIMEOUT_SECONDS = 2.0

Filter = dict[str, Any]
NEWEST_FIRST = ("-timestamp", "-_id")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
_EARLIEST = datetime.min.replace(tzinfo=UTC) + _MILLISECOND


def _just_before(moment: datetime) -> datetime:
    """The last millisecond before `moment`, so that `> result` means `>= moment`.

    MongoDB stores whole milliseconds (PyMongo drops the rest of a query value too), so the
    two are the same. `$gte` on `timestamp` is not used: SecantusDB (0.7) loses the events
    exactly at an inclusive bound that ends its walk of the descending `user_timeline`
    index (it stops at the first entry longer than the bound).
    """
    return moment - timedelta(microseconds=moment.microsecond % 1000) - _MILLISECOND


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

    def filters(self) -> list[Filter]:
        """The MongoDB filters of this page, in page order.

        `since` is inclusive, `until` exclusive, and every event is strictly after `after`.
        Their results, each sorted newest first and concatenated, are the page: after a
        cursor, first the events sharing its timestamp with a smaller event id, then the
        older ones. Two plain queries instead of one `$or`, which SecantusDB cannot serve
        from an index. `user_id` comes first: where SecantusDB serves a filter from one of
        its fields alone (with `event_type`), it takes the first that has an index.
        """
        user: Filter = {"user_id": self.user_id}
        if self.event_type is not None:
            user["event_type"] = self.event_type
        upper = self.until
        filters: list[Filter] = []
        if self.after is not None:
            tied = self.after.timestamp
            if (self.since is None or self.since <= tied) and (
                self.until is None or tied < self.until
            ):
                filters.append({**user, "timestamp": tied, "_id": {"$lt": self.after.event_id}})
            upper = tied if upper is None else min(upper, tied)
        if self.since is not None and upper is not None and upper <= self.since:
            return filters  # nothing older is left in the range
        bounds: Filter = {}
        if self.since is not None and self.since >= _EARLIEST:
            bounds["$gt"] = _just_before(self.since)
        if upper is not None:
            bounds["$lt"] = upper
        filters.append({**user, "timestamp": bounds} if bounds else user)
        return filters


class StoredEvent(Document):
    """Collection `activities` as ingest queries it through Beanie.

    No fields of its own and no indexes: the processor owns the stored schema and creates
    the indexes; a read only filters and sorts, and `ActivityItem` says what it returns.
    """

    class Settings:
        """The collection; Beanie touches no index for this model."""

        name = ACTIVITIES_COLLECTION


class ActivityItem(ActivityOut):
    """The projection model of a page read: the fields the read API returns, no others."""

    class Settings:
        """No projection sent to the server: the whole document is read, these fields kept.

        A stored document holds three small fields more; on SecantusDB a server-side
        projection cost ~40 ms per 500-event page, more than the whole client side of it
        (bench/RESULTS.md, "Beanie writes vs raw").
        """

        projection = None

    # Beanie probes each item for a document's hooks with `hasattr`: a miss raises inside
    # pydantic, dearer than the validation itself (bench/RESULTS.md). Answered here.
    @classmethod
    def get_model_type(cls) -> None:
        """Not a Beanie document: parsed by validation alone."""

    def _save_state(self) -> None:
        """No state to keep: items are only read."""


@dataclass(frozen=True)
class ActivityPage:
    """Up to `limit` events and the cursor of the next page (None on the last page)."""

    items: list[ActivityOut]
    next_cursor: str | None


class ActivityReader:
    """Reads pages of activity; never used on the write path."""

    def __init__(self, url: str, database: str) -> None:
        """Prepare a client for `url` (it connects on first use)."""
        self._client: AsyncMongoClient[Filter] = AsyncMongoClient(
            url,
            tz_aware=True,
            uuidRepresentation="standard",
            serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
            connectTimeoutMS=CONNECT_TIMEOUT_MS,
            timeoutMS=int(READ_TIMEOUT_SECONDS * 1000),
        )
        self._database = self._client[database]
        self._bound = False

    @property
    def client(self) -> AsyncMongoClient[Filter]:
        """The MongoDB client (erasure shares it)."""
        return self._client

    async def bind(self) -> None:
        """Bind `StoredEvent` to this reader's database (one a process), on the first read.

        Not at startup: Beanie asks the server, and ingest starts while MongoDB is down.
        """
        if not self._bound:
            await init_beanie(database=self._database, document_models=[StoredEvent])
            self._bound = True

    @staticmethod
    def find(query_filter: Filter, limit: int) -> FindMany[ActivityItem]:
        """Beanie's query of up to `limit` items matching one of a page's filters."""
        return StoredEvent.find(query_filter).sort(*NEWEST_FIRST).limit(limit).project(ActivityItem)

    async def page(self, query: ActivityQuery) -> ActivityPage:
        """One page, newest first; `DatabaseUnavailableError` when MongoDB does not answer.

        The page's queries share one deadline, `READ_TIMEOUT_SECONDS`. Reads one document
        more than the page holds, which says if more follow.
        """
        items: list[ActivityOut] = []
        try:
            with pymongo.timeout(READ_TIMEOUT_SECONDS):
                await self.bind()
                for query_filter in query.filters():
                    wanted = query.limit + 1 - len(items)
                    if wanted <= 0:
                        break
                    items += await self.find(query_filter, wanted).to_list()
        except PyMongoError as error:
            logger.warning(
                "read failed",
                extra={"error_type": type(error).__name__, "timeout": error.timeout},
            )
            raise DatabaseUnavailableError from error
        next_cursor = None
        if len(items) > query.limit:
            last = items[query.limit - 1]
            next_cursor = Position(last.timestamp, last.event_id).encode()
        return ActivityPage(items[: query.limit], next_cursor)

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
