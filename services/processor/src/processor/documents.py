"""The stored event: one Beanie document per event in collection `activities`.

Beanie declares the document and creates its indexes; events are written raw (each encoded
to BSON alone, one unordered `insert_many` of the bytes) into the collection the document
names: measured, Beanie's `insert_many` of documents cost ~2.8 times the CPU per event
(bench/RESULTS.md, "Beanie writes vs raw").
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from beanie import Document, init_beanie
from bson import encode
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pydantic import Field
from pymongo import AsyncMongoClient, IndexModel, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure
from pymongo.read_concern import ReadConcern

from activity_contract.erasure import erased_before
from activity_contract.events import (
    ActivityMessage,
    PlanViolation,
    StoredActivity,
    client_timestamp,
)
from activity_contract.storage import (
    ACTIVITIES_COLLECTION,
    ERASURES_COLLECTION,
    EVENT_TYPE_INDEX,
    EVENT_TYPE_KEYS,
    RETENTION_INDEX,
    RETENTION_KEYS,
    SECONDS_PER_DAY,
    USER_TIMELINE_INDEX,
    USER_TIMELINE_KEYS,
)

logger = logging.getLogger(__name__)
# An insert is acknowledged only once a majority has it in its journal.
DURABLE_WRITES = WriteConcern(w="majority", j=True)
# Bound every wait on an unreachable server (pymongo's default server selection is 30 s) so a
# database outage surfaces as a transient error the bulk writer retries with backoff.
SERVER_SELECTION_TIMEOUT_MS = 5_000
CONNECT_TIMEOUT_MS = 5_000
SOCKET_TIMEOUT_MS = 30_000
# How documents are encoded: standard UUIDs (the `_id`), aware datetimes.
CODEC_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=True, uuid_representation=UuidRepresentation.STANDARD
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


class Activity(StoredActivity, Document):
    """One activity event as stored, keyed by its event id (fields: `StoredActivity` +)."""

    id: UUID = Field(description="The event id: the document's identity.")  # type: ignore[assignment]
    redelivered: bool
    schema_version: int
    timestamp_assigned: bool = Field(
        default=False,
        description="Stored (as true) only when the client sent no timestamp: `timestamp` "
        "is then the time ingest received the event.",
    )
    plan_violations: list[PlanViolation] | None = Field(
        default=None,
        description="Stored only when the event breaks the tracking plan, enforced with "
        "`warn`: where and which rule (docs/tracking-plan.md).",
    )

    class Settings:
        """Collection, indexes, and no per-instance state tracking on the write path."""

        name = ACTIVITIES_COLLECTION
        indexes = [  # noqa: RUF012 - Beanie's declared format
            IndexModel(list(USER_TIMELINE_KEYS), name=USER_TIMELINE_INDEX),
            IndexModel(list(EVENT_TYPE_KEYS), name=EVENT_TYPE_INDEX),
        ]

    @staticmethod
    def stored_form(
        event: ActivityMessage, processed_at: datetime, redelivered: bool
    ) -> dict[str, Any]:
        """The document for an event, as stored (`_id` = event id), without a model instance.

        The same fields as this model (a test keeps them in step); building the dict
        directly costs a fraction of validating a Beanie document per event.
        """
        document: dict[str, Any] = {
            "_id": event.event_id,
            "user_id": event.user_id,
            "event_type": event.event_type,
            "timestamp": event.timestamp,
            "metadata": event.metadata,
            "received_at": event.received_at,
            "processed_at": processed_at,
            "redelivered": redelivered,
            "schema_version": event.schema_version,
        }
        if event.original_timestamp is not None:
            document["original_timestamp"] = event.original_timestamp
        if event.timestamp_assigned:
            document["timestamp_assigned"] = True
        if event.plan_violations:
            document["plan_violations"] = [
                violation.model_dump() for violation in event.plan_violations
            ]
        return document


def same_client_content(event: ActivityMessage, document: Mapping[str, Any]) -> bool:
    """Whether a stored document holds what the client sent as `event`.

    User, type, metadata and the client's own timestamp, if it sent one (datetimes compared
    at BSON's milliseconds); not what ingest stamped on each try (the receipt time, the
    corrected timestamp), so a retry of the same event is the same content.
    """
    stored_timestamp = client_timestamp(
        document.get("timestamp"),
        document.get("original_timestamp"),
        bool(document.get("timestamp_assigned")),
    )
    return (
        document.get("user_id") == event.user_id
        and document.get("event_type") == event.event_type
        and document.get("metadata") == event.metadata
        and _millis(stored_timestamp) == _millis(event.client_timestamp)
    )


def _millis(value: object) -> int | None:
    if not isinstance(value, datetime):
        return None
    return (value - _EPOCH) // _MILLISECOND


@dataclass(frozen=True, slots=True)
class EncodedActivity:
    """One event's document as BSON, with what the erasure check needs beside it."""

    bson: RawBSONDocument
    event_id: UUID
    user_id: str
    received_at: datetime
    timestamp: datetime

    @classmethod
    def of(
        cls, event: ActivityMessage, processed_at: datetime, redelivered: bool
    ) -> "EncodedActivity":
        """Encode one event; raises what the driver raises for what BSON cannot hold.

        Encoding each document alone lets a failure be pinned on its event; the bulk insert
        then sends these bytes as they are.
        """
        document = Activity.stored_form(event, processed_at, redelivered)
        raw = RawBSONDocument(encode(document, codec_options=CODEC_OPTIONS))
        return cls(raw, event.event_id, event.user_id, event.received_at, event.timestamp)


class ActivityStore:
    """Writes activities durably, and tells which ones an erasure covers.

    An erasure of a user covers the events it received before the erasure and those whose
    (corrected) timestamp precedes it, whenever they arrive. The bulk writer asks before
    each insert (covered events are not written) and after it (an erasure may have come in
    between); whichever comes first, the erasure's own delete or these checks, a covered
    event does not stay stored.
    """

    def __init__(self, database: AsyncDatabase[dict[str, object]]) -> None:
        """Write to `database` (bound with durable writes by `durable_database`)."""
        # The document's collection in `database` (not `Activity.get_pymongo_collection()`:
        # the store is built before Beanie is initialized, and on the explorers' database).
        self._activities = database[Activity.Settings.name]
        # Only an erasure a majority has decides: one that could still be rolled back must
        # neither keep an event out nor delete it.
        self._erasures = database.get_collection(
            ERASURES_COLLECTION, read_concern=ReadConcern("majority")
        )

    async def insert_many(self, documents: Sequence[EncodedActivity]) -> None:
        """Insert unordered; `BulkWriteError` reports duplicates and refused documents."""
        await self._activities.insert_many([d.bson for d in documents], ordered=False)

    async def covered(self, documents: Sequence[EncodedActivity]) -> list[int]:
        """The indexes of the documents an erasure covers."""
        users = sorted({document.user_id for document in documents})
        erased_at: dict[object, datetime] = {
            record["_id"]: record["erased_at"]  # type: ignore[misc]
            async for record in self._erasures.find({"_id": {"$in": users}})
        }
        return [
            index
            for index, document in enumerate(documents)
            if document.user_id in erased_at
            and erased_before(document.received_at, document.timestamp, erased_at[document.user_id])
        ]

    async def delete(self, documents: Sequence[EncodedActivity]) -> int:
        """Delete these documents (an erasure covers them); how many were stored."""
        result = await self._activities.delete_many(
            {"_id": {"$in": [document.event_id for document in documents]}}
        )
        return result.deleted_count

    async def stored(self, event_ids: Sequence[UUID]) -> dict[UUID, dict[str, Any]]:
        """The stored documents of these event ids, by id."""
        return {
            document["_id"]: document  # type: ignore[misc]
            async for document in self._activities.find({"_id": {"$in": list(event_ids)}})
        }


def mongo_client(url: str) -> AsyncMongoClient[dict[str, object]]:
    """A client with aware UTC datetimes, standard UUIDs and bounded waits on the server."""
    return AsyncMongoClient(
        url,
        tz_aware=True,
        uuidRepresentation="standard",
        serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
        connectTimeoutMS=CONNECT_TIMEOUT_MS,
        socketTimeoutMS=SOCKET_TIMEOUT_MS,
    )


def durable_database(
    client: AsyncMongoClient[dict[str, object]], database: str
) -> AsyncDatabase[dict[str, object]]:
    """`database` with writes acknowledged only once durable on a majority."""
    return client.get_database(database, write_concern=DURABLE_WRITES)


async def init_documents(
    client: AsyncMongoClient[dict[str, object]], database: str, retention_days: int = 0
) -> AsyncDatabase[dict[str, object]]:
    """Bind the document to the database with durable writes and create its indexes.

    Beanie only creates the indexes declared in `Activity.Settings` and drops none (index
    dropping stays off), so the TTL index managed by `apply_retention` survives it.
    """
    db = durable_database(client, database)
    await init_beanie(database=db, document_models=[Activity])
    await apply_retention(Activity.get_pymongo_collection(), retention_days)
    return db


async def apply_retention(collection: AsyncCollection[dict[str, object]], days: int) -> None:
    """Make the TTL index on `timestamp` match `days` (0: no TTL index, events kept forever).

    A changed period is applied in place with `collMod`; where the server refuses that, the
    index is dropped and created again.
    """
    existing = (await collection.index_information()).get(RETENTION_INDEX)
    if days == 0:
        if existing is not None:
            await collection.drop_index(RETENTION_INDEX)
            logger.info("retention removed", extra={"index": RETENTION_INDEX})
        return
    seconds = days * SECONDS_PER_DAY
    if existing is None:
        await _create_retention_index(collection, seconds)
    elif existing.get("expireAfterSeconds") != seconds:
        try:
            await collection.database.command(
                {
                    "collMod": collection.name,
                    "index": {"name": RETENTION_INDEX, "expireAfterSeconds": seconds},
                }
            )
        except OperationFailure:
            await collection.drop_index(RETENTION_INDEX)
            await _create_retention_index(collection, seconds)
    else:
        return
    logger.info("retention set", extra={"index": RETENTION_INDEX, "retention_days": days})


async def _create_retention_index(
    collection: AsyncCollection[dict[str, object]], seconds: int
) -> None:
    await collection.create_index(
        list(RETENTION_KEYS), name=RETENTION_INDEX, expireAfterSeconds=seconds
    )
