"""The stored document: one shape, declared once (contract + Beanie document)."""

from datetime import UTC, datetime

from activity_contract.events import ActivityIn, ActivityOut
from activity_testing.events import event_payload
from processor.documents import Activity, EncodedActivity


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
