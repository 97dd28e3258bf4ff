"""The processor judges every event by the tracking plan again (it trusts nothing):
violations stored under `warn`, the event dead-lettered alone under `enforce`."""

import uuid
from typing import Any

import pytest
from faststream.message import AckStatus
from faststream.rabbit import RabbitBroker

from activity_contract.events import ActivityGroupMessage, ActivityMessage, PlanViolation
from activity_contract.topology import ACTIVITY_QUEUE
from activity_contract.tracking_plan import (
    Enforcement,
    TrackingPlan,
    UnplannedPolicy,
    load_plan_events,
)
from activity_testing.plans import EXAMPLE_PLAN
from processor.documents import Activity
from processor.metrics import ProcessorMetrics

from .conftest import Outcomes, event, value

pytestmark = pytest.mark.integration

EVENTS = load_plan_events(EXAMPLE_PLAN)
GOOD_SIGNUP = {"method": "email", "plan": "free"}
BAD_SIGNUP = {"method": "fax", "plan": "free"}


@pytest.fixture
def plan(request: pytest.FixtureRequest) -> TrackingPlan:
    modes: dict[str, Any] = getattr(request, "param", {})
    return TrackingPlan(EVENTS, **modes)


def stored_violations(document: Activity | None) -> list[tuple[str, str]]:
    assert document is not None
    return [(violation.path, violation.rule) for violation in document.plan_violations or []]


@pytest.mark.parametrize("plan", [{"enforcement": Enforcement.WARN}], indirect=True)
async def test_warn_stores_violations_and_keeps_those_ingest_recorded(
    broker: RabbitBroker, outcomes: Outcomes, metrics: ProcessorMetrics
) -> None:
    good = event(event_type="signup", metadata=GOOD_SIGNUP)
    straight = event(event_type="signup", metadata=BAD_SIGNUP)  # not through ingest
    from_ingest = event(event_type="signup", metadata=BAD_SIGNUP)
    from_ingest.plan_violations = [
        PlanViolation(path="/metadata/method", rule="enum", message="from ingest")
    ]
    group = ActivityGroupMessage(group_id=uuid.uuid4(), events=[good, straight, from_ingest])
    await broker.publish(group.model_dump(mode="json", exclude_none=True), queue=ACTIVITY_QUEUE)
    assert outcomes.settled == [AckStatus.ACKED]
    assert outcomes.dead_letters == []
    assert stored_violations(await Activity.get(good.event_id)) == []
    assert stored_violations(await Activity.get(straight.event_id)) == [
        ("/metadata/method", "enum")
    ]
    kept = await Activity.get(from_ingest.event_id)
    assert kept is not None
    assert [violation.message for violation in kept.plan_violations or []] == ["from ingest"]
    name = "event_tracker_processor_plan_violations_total"
    assert value(metrics, name, event_type="signup", rule="enum", outcome="flagged") == 2


async def test_enforce_dead_letters_the_event_alone_with_its_reason(
    broker: RabbitBroker, outcomes: Outcomes, metrics: ProcessorMetrics
) -> None:
    good = event(event_type="signup", metadata=GOOD_SIGNUP)
    bad = event(event_type="signup", metadata=BAD_SIGNUP)
    group = ActivityGroupMessage(group_id=uuid.uuid4(), events=[good, bad])
    await broker.publish(group.model_dump(mode="json", exclude_none=True), queue=ACTIVITY_QUEUE)
    assert outcomes.settled == [AckStatus.ACKED]
    assert await Activity.get(good.event_id) is not None
    assert await Activity.get(bad.event_id) is None
    assert outcomes.reasons() == ["plan_violation"]
    [dead] = outcomes.dead_letters
    assert dead.message_id == str(bad.event_id)
    assert "/metadata/method" in dead.headers["x-dead-letter-error"]
    assert ActivityMessage.model_validate_json(dead.body).event_id == bad.event_id
    counted = value(
        metrics, "event_tracker_processor_events_dead_lettered_total", reason="plan_violation"
    )
    assert counted == 1


@pytest.mark.parametrize("plan", [{"unplanned": UnplannedPolicy.REFUSE}], indirect=True)
async def test_a_lone_unplanned_event_is_dead_lettered_with_its_reason(
    broker: RabbitBroker, outcomes: Outcomes
) -> None:
    lone = event(event_type="refund")
    await broker.publish(lone.model_dump(mode="json"), queue=ACTIVITY_QUEUE)
    assert outcomes.settled == [AckStatus.ACKED]  # the processor dead-lettered it itself
    assert outcomes.reasons() == ["unplanned_event"]
    assert await Activity.get(lone.event_id) is None


@pytest.mark.parametrize("plan", [{"unplanned": UnplannedPolicy.WARN}], indirect=True)
async def test_an_unplanned_event_under_warn_is_stored_flagged(
    broker: RabbitBroker, outcomes: Outcomes
) -> None:
    lone = event(event_type="refund")
    await broker.publish(lone.model_dump(mode="json"), queue=ACTIVITY_QUEUE)
    assert outcomes.dead_letters == []
    assert stored_violations(await Activity.get(lone.event_id)) == [
        ("/event_type", "unplanned_event")
    ]
