"""The stored document: one shape, declared once (contract + Beanie document); the store
telling which documents an erasure covers."""

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from bson import decode

from activity_contract.erasure import erasure_time
from activity_contract.events import ActivityIn, ActivityMessage, ActivityOut, PlanViolation
from activity_contract.storage import ACTIVITIES_COLLECTION, ERASURES_COLLECTION
from activity_testing.events import event_payload
from processor.documents import (
    CODEC_OPTIONS,
    Activity,
    ActivityStore,
    EncodedActivity,
    init_documents,
    mongo_client,
    same_client_content,
)


def stored_form(
    violations: list[PlanViolation] | None = None, **overrides: object
) -> dict[str, object]:
    received = datetime(2026, 6, 1, 12, tzinfo=UTC)
    event = ActivityIn.model_validate(event_payload(**overrides)).to_message(received)
    event.plan_violations = violations
    return Activity.stored_form(event, processed_at=received, redelivered=True)


def test_the_stored_form_has_exactly_the_documents_fields() -> None:
    corrected = stored_form(timestamp="2026-06-01T15:00:00Z", sent_at="2026-06-01T15:00:05Z")
    assigned = stored_form()  # no timestamp sent
    flagged = stored_form([PlanViolation(path="/metadata/path", rule="type", message="m")])
    declared = set(Activity.model_fields) - {"id", "revision_id"} | {"_id"}
    assert set(corrected) | set(assigned) | set(flagged) == declared
    assert set(corrected) ^ set(assigned) == {"original_timestamp", "timestamp_assigned"}
    assert set(flagged) - set(assigned) == {"plan_violations"}
    assert flagged["plan_violations"] == [
        {"path": "/metadata/path", "rule": "type", "message": "m"}
    ]


RECEIVED = datetime(2026, 6, 1, 12, tzinfo=UTC)
EVENT_ID = str(uuid4())


def a_try(received_at: datetime, **sent: object) -> ActivityMessage:
    """One try of the event `EVENT_ID` as ingest publishes it, received at `received_at`."""
    payload = event_payload(event_id=EVENT_ID, **sent)
    return ActivityIn.model_validate(payload).to_message(received_at)


def stored_try(**sent: object) -> dict[str, object]:
    """The first try as stored (times at BSON's milliseconds, as read back)."""
    encoded = EncodedActivity.of(a_try(RECEIVED, **sent), RECEIVED, redelivered=False)
    return dict(decode(encoded.bson.raw, codec_options=CODEC_OPTIONS))


@pytest.mark.parametrize(
    "sent",
    [
        {},
        {"sent_at": "2026-06-01T11:00:00Z"},
        {"timestamp": "2026-06-01T07:00:00.123456Z"},
        {"timestamp": "2026-06-01T15:00:00Z", "sent_at": "2026-06-01T15:00:05Z"},
    ],
    ids=["no-timestamp", "sent-at-only", "timestamp", "corrected"],
)
def test_a_retry_of_what_the_client_sent_is_the_same_content(sent: dict[str, str]) -> None:
    """Received later (and for sent_at, sent later too): ingest's stamps differ, not the event."""
    later = RECEIVED + timedelta(minutes=3)
    retry_sent = dict(sent)
    if "sent_at" in sent:
        retry_sent["sent_at"] = "2026-06-01T15:03:07Z"
    assert same_client_content(a_try(later, **retry_sent), stored_try(**sent))


@pytest.mark.parametrize(
    ("first", "retry"),
    [
        ({}, {"user_id": "other"}),
        ({}, {"event_type": "other"}),
        ({}, {"metadata": {"path": "/other"}}),
        ({}, {"timestamp": "2026-06-01T12:00:00Z"}),  # the receipt time of the first try
        ({"timestamp": "2026-06-01T07:00:00Z"}, {}),
        ({"timestamp": "2026-06-01T07:00:00Z"}, {"timestamp": "2026-06-01T07:00:01Z"}),
        (
            {"timestamp": "2026-06-01T15:00:00Z", "sent_at": "2026-06-01T15:00:05Z"},
            {"timestamp": "2026-06-01T15:00:01Z", "sent_at": "2026-06-01T15:00:05Z"},
        ),
    ],
    ids=[
        "user",
        "type",
        "metadata",
        "timestamp-added",
        "timestamp-dropped",
        "timestamp",
        "corrected-timestamp",
    ],
)
def test_other_content_under_the_same_id_is_not_the_same(
    first: dict[str, str], retry: dict[str, object]
) -> None:
    assert not same_client_content(a_try(RECEIVED, **retry), stored_try(**first))


def test_documents_and_messages_from_before_the_flag_compare_their_timestamps() -> None:
    """Stored or published without `timestamp_assigned`: the timestamp counts as sent."""
    old = a_try(RECEIVED).model_copy(update={"timestamp_assigned": False})
    stored = stored_try()
    del stored["timestamp_assigned"]
    assert same_client_content(old, stored)
    later = a_try(RECEIVED + timedelta(minutes=3)).model_copy(update={"timestamp_assigned": False})
    assert not same_client_content(later, stored)


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
