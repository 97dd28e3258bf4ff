"""The tracking plan at ingest, on the in-memory broker: 422 under enforce, marked events
under warn, unplanned types, the metric, `GET /api/v1/tracking-plan` and OpenAPI."""

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from activity_contract.events import ActivityGroupMessage, ActivityMessage
from activity_testing.events import event_payload
from activity_testing.plans import EXAMPLE_PLAN
from ingest.app import create_app
from ingest.settings import IngestSettings

from .conftest import NO_REDIS_URL, Published

SINGLE = "/api/v1/activities"
BATCH = "/api/v1/activities/batch"
GOOD_SIGNUP = {"method": "email", "plan": "free"}


@pytest.fixture
def modes() -> dict[str, Any]:
    return {}


@pytest.fixture
def settings(modes: dict[str, Any]) -> IngestSettings:
    """The example plan, with the test's modes."""
    return IngestSettings(
        _env_file=None,
        redis_url=NO_REDIS_URL,
        rate_limit="1000000/minute",
        tracking_plan_dir=EXAMPLE_PLAN,
        **modes,
    )


async def violations_counted(client: httpx.AsyncClient) -> dict[tuple[str, ...], float]:
    """`event_tracker_ingest_plan_violations_total` as `/metrics` shows it."""
    text = (await client.get("/metrics")).text
    return {
        (sample.labels["event_type"], sample.labels["rule"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "event_tracker_ingest_plan_violations"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


async def test_enforce_refuses_a_batch_naming_the_index_and_field(
    client: httpx.AsyncClient, published: Published
) -> None:
    events = [
        event_payload(event_type="signup", metadata=GOOD_SIGNUP),
        event_payload(event_type="signup", metadata={"method": "fax", "plan": "free"}),
        event_payload(event_type="page_view", metadata={}),
    ]
    response = await client.post(BATCH, json={"events": events})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    found = {(tuple(detail["loc"]), detail["type"], detail["index"]) for detail in body["details"]}
    assert found == {
        (("body", "events", 1, "metadata", "method"), "tracking_plan.enum", 1),
        (("body", "events", 2, "metadata", "path"), "tracking_plan.required", 2),
    }
    assert published.messages == []  # all or nothing
    assert await violations_counted(client) == {
        ("signup", "enum", "refused"): 1,
        ("page_view", "required", "refused"): 1,
    }


async def test_enforce_refuses_a_single_event_naming_the_field(
    client: httpx.AsyncClient, published: Published
) -> None:
    response = await client.post(SINGLE, json=event_payload(metadata={"path": 7}))
    assert response.status_code == 422
    [detail] = response.json()["details"]
    assert detail["loc"] == ["body", "metadata", "path"]
    assert detail["type"] == "tracking_plan.type"
    assert published.messages == []


async def test_events_that_meet_the_plan_are_published_unmarked(
    client: httpx.AsyncClient, published: Published
) -> None:
    response = await client.post(
        SINGLE, json=event_payload(event_type="signup", metadata=GOOD_SIGNUP)
    )
    assert response.status_code == 202
    assert b"plan_violations" not in published.messages[0].body


@pytest.mark.parametrize("modes", [{"tracking_plan_enforcement": "warn"}])
async def test_warn_accepts_and_marks_the_event(
    client: httpx.AsyncClient, published: Published
) -> None:
    events = [
        event_payload(event_type="signup", metadata=GOOD_SIGNUP),
        event_payload(event_type="signup", metadata={"plan": "gold", "method": "email"}),
    ]
    response = await client.post(BATCH, json={"events": events})
    assert response.status_code == 202, response.text
    group = ActivityGroupMessage.model_validate_json(published.messages[0].body)
    first, second = group.events
    assert isinstance(first, ActivityMessage)
    assert isinstance(second, ActivityMessage)
    assert first.plan_violations is None
    assert [(v.path, v.rule) for v in second.plan_violations or []] == [("/metadata/plan", "enum")]
    assert await violations_counted(client) == {("signup", "enum", "flagged"): 1}


@pytest.mark.parametrize("modes", [{"tracking_plan_enforcement": "off"}])
async def test_off_checks_nothing(client: httpx.AsyncClient, published: Published) -> None:
    response = await client.post(SINGLE, json=event_payload(metadata={"path": 7}))
    assert response.status_code == 202
    assert b"plan_violations" not in published.messages[0].body


@pytest.mark.parametrize(
    ("modes", "status", "marked"),
    [
        ({"tracking_plan_unplanned": "allow"}, 202, False),
        ({"tracking_plan_unplanned": "warn"}, 202, True),
        ({"tracking_plan_unplanned": "refuse"}, 422, False),
    ],
)
async def test_unplanned_event_types(
    client: httpx.AsyncClient,
    published: Published,
    status: int,
    marked: bool,
) -> None:
    response = await client.post(SINGLE, json=event_payload(event_type="refund"))
    assert response.status_code == status, response.text
    if status == 422:
        [detail] = response.json()["details"]
        assert detail["loc"] == ["body", "event_type"]
        assert detail["type"] == "tracking_plan.unplanned_event"
        assert await violations_counted(client) == {
            ("(unplanned)", "unplanned_event", "refused"): 1
        }
        return
    message = ActivityMessage.model_validate_json(published.messages[0].body)
    assert bool(message.plan_violations) is marked


async def test_the_plan_is_served_with_its_modes(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/tracking-plan")
    assert response.status_code == 200
    plan = response.json()
    assert (plan["configured"], plan["enforcement"], plan["unplanned"]) == (
        True,
        "enforce",
        "allow",
    )
    types = {event["event_type"]: event for event in plan["event_types"]}
    assert set(types) == {"page_view", "signup", "purchase", "search", "feature_used"}
    assert types["signup"]["metadata"]["required"] == ["method", "plan"]
    assert types["signup"]["version"] == "1-0-0"
    assert types["signup"]["examples"]


async def test_openapi_describes_each_planned_type(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    components = schema["components"]["schemas"]
    for event_type in ("page_view", "signup", "purchase", "search", "feature_used"):
        assert f"PlannedMetadata.{event_type}" in components
    single = schema["paths"][SINGLE]["post"]["requestBody"]
    examples: dict[str, Any] = single["content"]["application/json"]["examples"]
    assert {example["value"]["event_type"] for example in examples.values()} >= {"signup"}
    assert "tracking plan" in single["description"]
    assert "/api/v1/tracking-plan" in schema["paths"]


async def test_without_a_plan_nothing_changes() -> None:
    app = create_app(IngestSettings(_env_file=None, redis_url=NO_REDIS_URL))
    assert app.state.tracking_plan is None
    assert app.write_path is not None
    schema = app.openapi()
    assert not any(name.startswith("PlannedMetadata.") for name in schema["components"]["schemas"])
    assert (
        "examples"
        not in schema["paths"][SINGLE]["post"]["requestBody"]["content"]["application/json"]
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ingest"
    ) as client:
        served = (await client.get("/api/v1/tracking-plan")).json()
    assert served == {
        "configured": False,
        "enforcement": "off",
        "unplanned": "allow",
        "event_types": [],
    }
