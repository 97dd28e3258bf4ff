"""The stored event: one Beanie document per event in collection `activities` (SPEC §7)."""

from datetime import datetime
from uuid import UUID

from beanie import Document, init_beanie
from pydantic import Field, JsonValue
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, WriteConcern
from pymongo.asynchronous.database import AsyncDatabase

from activity_contract.events import ActivityMessage

COLLECTION = "activities"
# An insert is acknowledged only once a majority has it in its journal (SPEC §6).
DURABLE_WRITES = WriteConcern(w="majority", j=True)
# Bound every wait on an unreachable server (pymongo's default server selection is 30 s) so a
# database outage surfaces as a transient error the bulk writer retries with backoff.
SERVER_SELECTION_TIMEOUT_MS = 5_000
CONNECT_TIMEOUT_MS = 5_000
SOCKET_TIMEOUT_MS = 30_000


class Activity(Document):
    """One activity event as stored, keyed by its event id."""

    id: UUID = Field(description="The event id: the document's identity.")  # type: ignore[assignment]
    user_id: str
    event_type: str
    timestamp: datetime
    metadata: dict[str, JsonValue]
    received_at: datetime
    processed_at: datetime
    redelivered: bool
    schema_version: int

    class Settings:
        """Collection, indexes, and no per-instance state tracking on the write path."""

        name = COLLECTION
        indexes = [  # noqa: RUF012 - Beanie's declared format
            IndexModel([("user_id", ASCENDING), ("timestamp", DESCENDING)], name="user_timestamp"),
            IndexModel(
                [("event_type", ASCENDING), ("timestamp", DESCENDING)], name="type_timestamp"
            ),
        ]

    @classmethod
    def from_message(
        cls, message: ActivityMessage, processed_at: datetime, redelivered: bool
    ) -> "Activity":
        """The document for a queue message."""
        return cls(
            id=message.event_id,
            user_id=message.user_id,
            event_type=message.event_type,
            timestamp=message.timestamp,
            metadata=message.metadata,
            received_at=message.received_at,
            processed_at=processed_at,
            redelivered=redelivered,
            schema_version=message.schema_version,
        )


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


async def init_documents(
    client: AsyncMongoClient[dict[str, object]], database: str
) -> AsyncDatabase[dict[str, object]]:
    """Bind the document to the database with durable writes and create its indexes."""
    db = client.get_database(database, write_concern=DURABLE_WRITES)
    await init_beanie(database=db, document_models=[Activity])
    return db
