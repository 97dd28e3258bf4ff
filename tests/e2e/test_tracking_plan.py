"""The tracking plan through the real pipeline: ingest and processor as processes, RabbitMQ,
the database; each mode, unplanned event types, and events published straight to the queue
(the processor trusts nothing)."""

from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from activity_contract.events import ActivityIn
from activity_contract.topology import ACTIVITY_QUEUE, DEAD_LETTER_QUEUE
from activity_testing.events import event_payload
from activity_testing.plans import EXAMPLE_PLAN
from activity_testing.processes import ServiceProcess

from .conftest import Document, QueueDepth, WaitForCount, WaitUntil

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SIGNUP = {"method": "email", "plan": "free"}
BAD_SIGNUP = {"method": "fax", "plan": "free"}


@pytest.fixture
def modes() -> dict[str, str]:
    return {}


@pytest.fixture
def stack_env(stack_env: dict[str, str], modes: dict[str, str]) -> dict[str, str]:
    """Both services with the example plan and the test's modes."""
    return {**stack_env, "TRACKING_PLAN_DIR": str(EXAMPLE_PLAN), **modes}


async def publish_straight(rabbit_url: str, **overrides: Any) -> str:
    """Publish one event to the queue as a producer other than ingest might; its id."""
    event = ActivityIn.model_validate(event_payload(**overrides)).to_message(datetime.now(UTC))
    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(
                event.model_dump_json(exclude_none=True).encode(),
                message_id=str(event.event_id),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=ACTIVITY_QUEUE,
        )
    return str(event.event_id)


async def dead_letter_reasons(rabbit_url: str) -> dict[str, str]:
    """The dead letters' `x-dead-letter-reason` by message id (held unacknowledged, so each
    is got once, then put back)."""
    connection = await aio_pika.connect(rabbit_url)
    reasons: dict[str, str] = {}
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
        held = []
        while (message := await queue.get(fail=False)) is not None:
            held.append(message)
            reasons[str(message.message_id)] = str(message.headers.get("x-dead-letter-reason"))
        for message in held:
            await message.nack(requeue=True)
    return reasons


def violations(document: Document) -> list[tuple[str, str]]:
    return [(item["path"], item["rule"]) for item in document.get("plan_violations", [])]


async def counted(client: httpx.AsyncClient) -> dict[tuple[str, str, str], float]:
    text = (await client.get("/metrics")).text
    return {
        (s.labels["event_type"], s.labels["rule"], s.labels["outcome"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "event_tracker_ingest_plan_violations"
        for s in family.samples
        if s.name.endswith("_total")
    }


@pytest.mark.parametrize(
    "modes", [{"TRACKING_PLAN_ENFORCEMENT": "enforce", "TRACKING_PLAN_UNPLANNED": "refuse"}]
)
async def test_enforce_refuses_at_ingest_and_dead_letters_what_bypassed_it(
    client: httpx.AsyncClient,
    processor: ServiceProcess,
    rabbit_url: str,
    activities: Any,
    wait_for_count: WaitForCount,
    queue_depth: QueueDepth,
    wait_until: WaitUntil,
) -> None:
    processor.start()
    batch = [
        event_payload(event_type="signup", metadata=SIGNUP),
        event_payload(event_type="signup", metadata=BAD_SIGNUP),
    ]
    refused = await client.post("/api/v1/activities/batch", json={"events": batch})
    assert refused.status_code == 422
    [detail] = refused.json()["details"]
    assert detail["loc"] == ["body", "events", 1, "metadata", "method"]
    assert detail["type"] == "tracking_plan.enum"
    assert detail["index"] == 1
    unplanned = await client.post("/api/v1/activities", json=event_payload(event_type="refund"))
    assert unplanned.status_code == 422
    assert unplanned.json()["details"][0]["type"] == "tracking_plan.unplanned_event"

    accepted = await client.post("/api/v1/activities/batch", json={"events": batch[:1]})
    assert accepted.status_code == 202
    straight = await publish_straight(rabbit_url, event_type="signup", metadata=BAD_SIGNUP)
    unplanned_id = await publish_straight(rabbit_url, event_type="refund")

    async def two_dead_letters() -> bool:
        return await queue_depth(DEAD_LETTER_QUEUE) == 2

    assert await wait_until(two_dead_letters, within=60)
    assert await wait_for_count(1) == 1
    [stored] = await activities.find({}).to_list()
    assert str(stored["_id"]) == accepted.json()["event_ids"][0]
    assert "plan_violations" not in stored
    assert await dead_letter_reasons(rabbit_url) == {
        straight: "plan_violation",
        unplanned_id: "unplanned_event",
    }
    assert await counted(client) == {
        ("signup", "enum", "refused"): 1,
        ("(unplanned)", "unplanned_event", "refused"): 1,
    }


@pytest.mark.parametrize(
    "modes", [{"TRACKING_PLAN_ENFORCEMENT": "warn", "TRACKING_PLAN_UNPLANNED": "warn"}]
)
async def test_warn_stores_every_event_with_its_violations(
    client: httpx.AsyncClient,
    processor: ServiceProcess,
    rabbit_url: str,
    activities: Any,
    wait_for_count: WaitForCount,
    queue_depth: QueueDepth,
) -> None:
    processor.start()
    batch = [
        event_payload(event_type="signup", metadata=SIGNUP),
        event_payload(event_type="signup", metadata=BAD_SIGNUP),
        event_payload(event_type="refund"),
    ]
    response = await client.post("/api/v1/activities/batch", json={"events": batch})
    assert response.status_code == 202, response.text
    good, bad, unplanned = response.json()["event_ids"]
    straight = await publish_straight(rabbit_url, event_type="page_view", metadata={"path": 1})
    assert await wait_for_count(4) == 4
    stored = {str(document["_id"]): document async for document in activities.find({})}
    assert violations(stored[good]) == []
    assert violations(stored[bad]) == [("/metadata/method", "enum")]
    assert violations(stored[unplanned]) == [("/event_type", "unplanned_event")]
    assert violations(stored[straight]) == [("/metadata/path", "type")]  # found by the processor
    assert await queue_depth(DEAD_LETTER_QUEUE) == 0
    assert await counted(client) == {
        ("signup", "enum", "flagged"): 1,
        ("(unplanned)", "unplanned_event", "flagged"): 1,
    }


@pytest.mark.parametrize(
    "modes", [{"TRACKING_PLAN_ENFORCEMENT": "off", "TRACKING_PLAN_UNPLANNED": "allow"}]
)
async def test_off_and_allow_store_everything_unmarked(
    client: httpx.AsyncClient,
    processor: ServiceProcess,
    activities: Any,
    wait_for_count: WaitForCount,
) -> None:
    processor.start()
    batch = [
        event_payload(event_type="signup", metadata=BAD_SIGNUP),
        event_payload(event_type="refund"),
    ]
    response = await client.post("/api/v1/activities/batch", json={"events": batch})
    assert response.status_code == 202
    assert await wait_for_count(2) == 2
    assert [violations(document) async for document in activities.find({})] == [[], []]
    plan = (await client.get("/api/v1/tracking-plan")).json()
    assert (plan["configured"], plan["enforcement"], plan["unplanned"]) == (True, "off", "allow")
    assert len(plan["event_types"]) == 5
