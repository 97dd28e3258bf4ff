"""The stored document: one shape, declared once (contract + Beanie document); the store
telling which documents an erasure covers."""

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from activity_contract.erasure import erasure_time
from activity_contract.events import ActivityIn, ActivityMessage, ActivityOut
from activity_contract.storage import ACTIVITIES_COLLECTION, ERASURES_COLLECTION
from activity_testing.events import event_payload
from processor.documents import (
    Activity,
    ActivityStore,
    EncodedActivity,
    init_documents,
    mongo_client,
)


def stored_form(**overrides: object) -> dict[str, object]:
    received = datetime(2026, 6, 1, 12, tzinfo=UTC)
    event = ActivityIn.model_validate(event_payload(**overrides)).to_message(received)
    return Activity.stored_form(event, processed_at=received, redelivered=True)


def test_the_stored_form_has_exactly_the_documents_fields() -> None:
    form = stored_form(timestamp="2026-06-01T15:00:00Z", sent_at="2026-06-01T15:00:05Z")
    declared = set(Activity.model_fields) - {"id", "revision_id"} | {"_id"}
    assert set(form) == declared


def test_the_read_model_reads_the_stored_form() -> None:
    form = stored_form()
    read = ActivityOut.model_validate(form)
    assert read.event_id == form["_id"]
    assert read.original_timestamp is None
    assert read.user_id == form["user_id"]


def test_each_event_is_encoded_alone() -> None:
    received = datetime(2026, 6, 1, 12, tzinfo=UTC)
    event = ActivityIn.model_validate(event_payload()).to_message(received)
    encoded = EncodedActivity.of(event, processed_at=received, redelivered=False)
    assert encoded.bson["_id"].as_uuid() == event.event_id  # stored as a standard UUID
    assert (encoded.user_id, encoded.received_at) == (event.user_id, received)
    assert encoded.timestamp == event.timestamp  # what the erasure checks compare too


@pytest.mark.integration
async def test_the_store_tells_what_an_erasure_covers_and_deletes_it(
    mongo_server_url: str, mongo_database: str
) -> None:
    """Covered: received before the erasure, or timed before it (a late retry)."""
    client = mongo_client(mongo_server_url)
    try:
        database = await init_documents(client, mongo_database)
        store = ActivityStore(database)
        erased_at = erasure_time(datetime.now(UTC))
        await database[ERASURES_COLLECTION].insert_one({"_id": "gone", "erased_at": erased_at})
        before, after = erased_at - timedelta(microseconds=300), erased_at + timedelta(seconds=1)

        def encoded(user_id: str, received_at: datetime, timestamp: datetime) -> EncodedActivity:
            event = ActivityMessage.model_validate(
                event_payload(user_id=user_id, timestamp=timestamp)
                | {"event_id": uuid4(), "received_at": received_at}
            )
            return EncodedActivity.of(event, after, redelivered=False)

        documents = [
            encoded("gone", received_at=before, timestamp=before),  # queued before it
            encoded("gone", received_at=after, timestamp=before),  # a late retry
            encoded("gone", received_at=after, timestamp=after),  # after it: kept
            encoded("other", received_at=before, timestamp=before),  # nobody erased
        ]
        await store.insert_many(documents[1:])
        assert await store.covered(documents) == [0, 1]
        assert await store.delete(documents[:2]) == 1  # only the second was stored
        left = await database[ACTIVITIES_COLLECTION].count_documents({})
        assert left == 2
    finally:
        await client.close()
