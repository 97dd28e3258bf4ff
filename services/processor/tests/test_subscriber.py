"""The subscriber on FastStream's in-memory broker, writing to a real database.

Each message kind (one event, a group of events), each way a message is settled, what
is logged and counted. The in-memory broker has no dead-lettering of its own: a message
rejected without requeue is what RabbitMQ dead-letters (test_settling shows it does); the
events of a group the processor dead-letters alone arrive here through the DLQ.
"""

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from faststream.message import AckStatus
from faststream.rabbit import RabbitBroker
from pymongo.asynchronous.database import AsyncDatabase

from activity_contract.events import ActivityGroupMessage, ActivityIn, ActivityMessage
from activity_contract.topology import ACTIVITY_QUEUE, MAX_MESSAGE_BYTES
from activity_testing.events import event_payload
from processor.documents import Activity
from processor.metrics import ProcessorMetrics

from .conftest import Outcomes, event, value

pytestmark = pytest.mark.integration


async def test_one_event_message_is_stored_then_acked(
    broker: RabbitBroker, outcomes: Outcomes
) -> None:
    one = event(metadata={"k": [1, 2]})
    await broker.publish(one.model_dump(mode="json"), queue=ACTIVITY_QUEUE)
    stored = await Activity.get(one.event_id)
    assert stored is not None
    assert stored.user_id == one.user_id
    assert stored.metadata == {"k": [1, 2]}
    assert stored.redelivered is False
    assert stored.processed_at >= stored.received_at
    assert outcomes.settled == [AckStatus.ACKED]


async def test_group_message_stores_each_event_then_acks_once(
    broker: RabbitBroker, outcomes: Outcomes, metrics: ProcessorMetrics
) -> None:
    events = [event(user_id=f"user-{i}") for i in range(5)]
    group = ActivityGroupMessage(group_id=uuid.uuid4(), events=events)
    await broker.publish(group.model_dump(mode="json"), queue=ACTIVITY_QUEUE)
    for each in events:
        stored = await Activity.get(each.event_id)
        assert stored is not None
        assert stored.user_id == each.user_id
    assert outcomes.settled == [AckStatus.ACKED]
    assert value(metrics, "event_tracker_processor_events_persisted_total") == 5
    assert value(metrics, "event_tracker_processor_events_consumed_total") == 5
    kind = {"kind": "activity_group"}
    assert value(metrics, "event_tracker_processor_messages_consumed_total", **kind) == 1


async def test_redelivered_group_stores_nothing_twice(
    broker: RabbitBroker, outcomes: Outcomes, metrics: ProcessorMetrics
) -> None:
    events = [event() for _ in range(3)]
    group = ActivityGroupMessage(group_id=uuid.uuid4(), events=events).model_dump(mode="json")
    await broker.publish(group, queue=ACTIVITY_QUEUE)
    await broker.publish(group, queue=ACTIVITY_QUEUE)
    ids = [each.event_id for each in events]
    assert await Activity.find({"_id": {"$in": ids}}).count() == 3
    assert value(metrics, "event_tracker_processor_events_duplicate_total") == 3
    assert outcomes.settled == [AckStatus.ACKED] * 2


async def test_duplicate_is_acked_and_stored_once(broker: RabbitBroker, outcomes: Outcomes) -> None:
    body = event().model_dump(mode="json")
    for _ in range(3):
        await broker.publish(body, queue=ACTIVITY_QUEUE)
    assert await Activity.find(Activity.id == UUID(body["event_id"])).count() == 1
    assert outcomes.settled == [AckStatus.ACKED] * 3


async def test_an_unknown_field_is_ignored(broker: RabbitBroker, outcomes: Outcomes) -> None:
    """Tolerant reader: a newer producer may add fields (rolling upgrades)."""
    one = event()
    await broker.publish(
        {**one.model_dump(mode="json"), "added_by_a_newer_ingest": {"x": 1}}, queue=ACTIVITY_QUEUE
    )
    assert await Activity.get(one.event_id) is not None
    assert outcomes.settled == [AckStatus.ACKED]
    assert outcomes.dead_letters == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "invalid"),
        (b"{}", "invalid"),
        (json.dumps({"event_id": str(uuid.uuid4()), "user_id": "u"}).encode(), "invalid"),
        ({"event_type": "9 bad"}, "invalid"),
        ({"metadata": {"a\u0000b": 1}}, "invalid"),
        ({"metadata": {"n": 1180591620717411303424}}, "invalid"),
        ({"schema_version": 2}, "unknown_schema_version"),
        ({"schema_version": 2, "event_type": None}, "unknown_schema_version"),
    ],
    ids=[
        "not-json",
        "empty-object",
        "missing-fields",
        "bad-event-type",
        "nul-in-key",
        "int-beyond-64-bits",
        "unknown-version",
        "unknown-version-other-shape",
    ],
)
async def test_undecodable_or_invalid_message_is_dead_lettered_with_its_reason(
    broker: RabbitBroker,
    outcomes: Outcomes,
    metrics: ProcessorMetrics,
    caplog: pytest.LogCaptureFixture,
    body: bytes | dict[str, Any],
    reason: str,
) -> None:
    if isinstance(body, dict):
        body = {**event().model_dump(mode="json"), **body}
    await broker.publish(body, queue=ACTIVITY_QUEUE, correlation_id="req-bad")
    assert_dead_lettered_whole(outcomes, metrics, caplog, reason, request_id="req-bad")
    assert await Activity.count() == 0


def assert_dead_lettered_whole(
    outcomes: Outcomes,
    metrics: ProcessorMetrics,
    caplog: pytest.LogCaptureFixture,
    reason: str,
    request_id: str | None = None,
) -> None:
    """Rejected at its first delivery, without requeue (RabbitMQ dead-letters it as it
    came); counted with its reason and logged once; nothing published by the processor."""
    assert outcomes.settled == [AckStatus.REJECTED]
    assert outcomes.requeue == [False]
    assert outcomes.dead_letters == []
    counted = value(metrics, "event_tracker_processor_events_dead_lettered_total", reason=reason)
    assert counted == 1
    assert value(metrics, "event_tracker_processor_events_retried_total") == 0
    [logged] = [r for r in caplog.records if r.getMessage() == "message dead-lettered"]
    assert logged.__dict__["reason"] == reason
    assert logged.__dict__["request_id"] == request_id
    assert logged.exc_info is None  # one line, no traceback


async def test_an_event_the_database_refuses_is_dead_lettered_alone(
    broker: RabbitBroker, outcomes: Outcomes, database: AsyncDatabase[dict[str, object]]
) -> None:
    """Only the refused event of a group goes to the DLQ; its neighbours are stored."""
    await database.command("collMod", "activities", validator={"user_id": {"$ne": "refused"}})
    good = [event() for _ in range(3)]
    bad = event(user_id="refused")
    group = ActivityGroupMessage(group_id=uuid.uuid4(), events=[good[0], bad, *good[1:]])
    await broker.publish(group.model_dump(mode="json"), queue=ACTIVITY_QUEUE)
    for each in good:
        assert await Activity.get(each.event_id) is not None
    assert await Activity.get(bad.event_id) is None
    assert outcomes.settled == [AckStatus.ACKED]
    assert outcomes.reasons() == ["refused"]
    [dead] = outcomes.dead_letters
    assert dead.message_id == str(bad.event_id)
    assert ActivityMessage.model_validate_json(dead.body).event_id == bad.event_id


async def test_a_lone_event_the_database_refuses_is_rejected_whole(
    broker: RabbitBroker,
    outcomes: Outcomes,
    metrics: ProcessorMetrics,
    caplog: pytest.LogCaptureFixture,
    database: AsyncDatabase[dict[str, object]],
) -> None:
    """A one-event message is its event: RabbitMQ dead-letters it as it came."""
    await database.command("collMod", "activities", validator={"user_id": {"$ne": "refused"}})
    bad = event(user_id="refused")
    await broker.publish(bad.model_dump(mode="json"), queue=ACTIVITY_QUEUE, correlation_id="r")
    assert_dead_lettered_whole(outcomes, metrics, caplog, "refused", request_id="r")
    assert await Activity.get(bad.event_id) is None


async def test_bad_events_of_a_group_are_dead_lettered_alone_and_the_rest_stored(
    broker: RabbitBroker, outcomes: Outcomes, metrics: ProcessorMetrics
) -> None:
    """An event of an unknown version and one missing a field do not fail their group."""
    good = [event() for _ in range(3)]
    newer = event().model_dump(mode="json") | {"schema_version": 2}
    missing = event().model_dump(mode="json")
    del missing["user_id"]
    group = ActivityGroupMessage(group_id=uuid.uuid4(), events=good).model_dump(mode="json")
    group["events"] = [good[0].model_dump(mode="json"), newer, missing, *group["events"][1:]]
    await broker.publish(group, queue=ACTIVITY_QUEUE, correlation_id="req-group")

    for each in good:
        assert await Activity.get(each.event_id) is not None
    assert await Activity.count() == 3
    assert outcomes.settled == [AckStatus.ACKED]
    dead = {message.message_id: message for message in outcomes.dead_letters}
    assert set(dead) == {newer["event_id"], missing["event_id"]}
    assert dead[newer["event_id"]].headers["x-dead-letter-reason"] == "unknown_schema_version"
    assert dead[missing["event_id"]].headers["x-dead-letter-reason"] == "invalid"
    assert dead[missing["event_id"]].headers["x-dead-letter-error"] == "user_id: Field required"
    assert json.loads(dead[missing["event_id"]].body) == missing  # alone, as it came
    assert ActivityMessage.model_validate_json(dead[newer["event_id"]].body).schema_version == 2
    assert {message.correlation_id for message in dead.values()} == {"req-group"}
    for reason in ("unknown_schema_version", "invalid"):
        counted = value(
            metrics, "event_tracker_processor_events_dead_lettered_total", reason=reason
        )
        assert counted == 1
    assert value(metrics, "event_tracker_processor_events_persisted_total") == 3


@pytest.mark.parametrize("depth", [300, 100_000], ids=["past-pydantic", "past-python-json"])
async def test_a_message_nested_too_deep_is_rejected_at_its_first_delivery(
    broker: RabbitBroker,
    outcomes: Outcomes,
    metrics: ProcessorMetrics,
    caplog: pytest.LogCaptureFixture,
    depth: int,
) -> None:
    """JSON deeper than the parser reads is unreadable: never requeued to fail again."""
    body = event().model_dump_json(exclude={"metadata"})
    deep = body[:-1] + ', "metadata": {"a": ' + "[" * depth + "]" * depth + "}}"
    assert len(deep) < MAX_MESSAGE_BYTES
    await broker.publish(deep.encode(), queue=ACTIVITY_QUEUE, correlation_id="req-deep")
    assert_dead_lettered_whole(outcomes, metrics, caplog, "invalid", request_id="req-deep")
    assert await Activity.count() == 0


async def test_a_message_over_the_largest_size_is_rejected_unread(
    broker: RabbitBroker,
    outcomes: Outcomes,
    metrics: ProcessorMetrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Valid but over 2 MiB: what is held in memory stays bounded by prefetch x 2 MiB."""
    padded = [event(metadata={"pad": "x" * 15_000}) for _ in range(150)]
    group = ActivityGroupMessage(group_id=uuid.uuid4(), events=padded)
    body = group.model_dump_json().encode()
    assert len(body) > MAX_MESSAGE_BYTES
    await broker.publish(body, queue=ACTIVITY_QUEUE, correlation_id="req-big")
    assert_dead_lettered_whole(outcomes, metrics, caplog, "too_large", request_id="req-big")
    assert await Activity.count() == 0


async def test_processing_continues_after_a_poison_message(
    broker: RabbitBroker, outcomes: Outcomes, metrics: ProcessorMetrics
) -> None:
    await broker.publish(b"\x00garbage", queue=ACTIVITY_QUEUE)
    one = event()
    await broker.publish(one.model_dump(mode="json"), queue=ACTIVITY_QUEUE)
    assert outcomes.settled == [AckStatus.REJECTED, AckStatus.ACKED]
    assert outcomes.requeue == [False]
    assert value(metrics, "event_tracker_processor_events_dead_lettered_total", reason="invalid")
    assert await Activity.get(one.event_id) is not None


async def test_a_reused_event_id_with_other_content_is_counted_and_logged(
    broker: RabbitBroker,
    metrics: ProcessorMetrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = event(user_id="alice", metadata={"secret": "do-not-log"})
    await broker.publish(first.model_dump(mode="json"), queue=ACTIVITY_QUEUE)
    await broker.publish(first.model_dump(mode="json"), queue=ACTIVITY_QUEUE)  # a redelivery
    assert value(metrics, "event_tracker_processor_events_conflicting_total") == 0
    other = first.model_copy(update={"user_id": "mallory", "metadata": {"other": 1}})
    await broker.publish(other.model_dump(mode="json"), queue=ACTIVITY_QUEUE)

    stored = await Activity.get(first.event_id)
    assert stored is not None
    assert stored.user_id == "alice"  # first write wins
    assert value(metrics, "event_tracker_processor_events_conflicting_total") == 1
    [warning] = [r for r in caplog.records if "reused" in r.getMessage()]
    assert warning.__dict__["event_id"] == str(first.event_id)
    assert (warning.__dict__["stored_user_id"], warning.__dict__["user_id"]) == (
        "alice",
        "mallory",
    )
    assert "do-not-log" not in caplog.text


async def test_identical_retries_are_duplicates_and_changed_content_a_conflict(
    broker: RabbitBroker, metrics: ProcessorMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    """A retry (same id and body, no timestamp) is stamped anew by ingest each time: still
    the same event. Only what the client sent decides."""
    payload = event_payload(event_id=str(uuid.uuid4()), metadata={"path": "/cart"})
    first_try = datetime.now(UTC) - timedelta(minutes=1)
    tries = [
        ActivityIn.model_validate(payload).to_message(first_try + timedelta(seconds=5 * n))
        for n in range(6)
    ]
    assert len({each.timestamp for each in tries}) == 6  # each try received at its own time
    for each in tries:
        await broker.publish(each.model_dump(mode="json"), queue=ACTIVITY_QUEUE)
    assert value(metrics, "event_tracker_processor_events_persisted_total") == 1
    assert value(metrics, "event_tracker_processor_events_duplicate_total") == 5
    assert value(metrics, "event_tracker_processor_events_conflicting_total") == 0
    assert not [r for r in caplog.records if "reused" in r.getMessage()]

    changed = ActivityIn.model_validate({**payload, "metadata": {"path": "/other"}})
    await broker.publish(
        changed.to_message(datetime.now(UTC)).model_dump(mode="json"), queue=ACTIVITY_QUEUE
    )
    assert value(metrics, "event_tracker_processor_events_conflicting_total") == 1


async def test_stored_event_logs_request_id_and_counts(
    broker: RabbitBroker, metrics: ProcessorMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="processor")
    one = event(metadata={"secret": "do-not-log"})
    await broker.publish(one.model_dump(mode="json"), ACTIVITY_QUEUE, correlation_id="req-1")
    await broker.publish(one.model_dump(mode="json"), ACTIVITY_QUEUE, correlation_id="req-2")

    stored = [record for record in caplog.records if record.getMessage() == "event stored"]
    assert [(r.__dict__["request_id"], r.__dict__["outcome"]) for r in stored] == [
        ("req-1", "stored"),
        ("req-2", "duplicate"),
    ]
    assert all(record.__dict__["event_id"] == str(one.event_id) for record in stored)
    assert "do-not-log" not in caplog.text
    assert value(metrics, "event_tracker_processor_events_persisted_total") == 1
    assert value(metrics, "event_tracker_processor_events_duplicate_total") == 1
    assert value(metrics, "event_tracker_processor_bulk_write_size_count") == 2
    assert value(metrics, "event_tracker_processor_end_to_end_latency_seconds_count") == 1
    assert value(metrics, "event_tracker_processor_end_to_end_latency_seconds_sum") >= 2
    assert value(metrics, "event_tracker_processor_messages_consumed_total", kind="activity") == 2


async def test_group_events_log_their_own_request_ids(
    broker: RabbitBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="processor")
    now = datetime.now(UTC)
    events = [
        ActivityIn.model_validate(event_payload()).to_message(now, request_id=f"req-{i}")
        for i in range(2)
    ]
    group = ActivityGroupMessage(group_id=uuid.uuid4(), events=events)
    await broker.publish(group.model_dump(mode="json"), ACTIVITY_QUEUE)
    stored = [record for record in caplog.records if record.getMessage() == "event stored"]
    assert sorted(r.__dict__["request_id"] for r in stored) == ["req-0", "req-1"]
