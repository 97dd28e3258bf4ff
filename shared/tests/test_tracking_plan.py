"""The tracking plan: loading (and refusing) plan files, and judging events by mode."""

from pathlib import Path

import pytest

from activity_contract.settings import ConfigurationError, TrackingPlanSettings
from activity_contract.tracking_plan import (
    ACCEPTED,
    UNPLANNED_LABEL,
    Enforcement,
    PlanError,
    TrackingPlan,
    UnplannedPolicy,
    load_plan_events,
    pointer_parts,
)
from activity_testing.plans import CHECKOUT, EXAMPLE_PLAN, planned_event, write_plan

pytestmark = pytest.mark.usefixtures("no_dotenv")


def checkout_plan(tmp_path: Path, **modes: object) -> TrackingPlan:
    events = load_plan_events(write_plan(tmp_path / "plan", CHECKOUT))
    return TrackingPlan(events, **modes)  # type: ignore[arg-type]


def test_the_example_plan_loads_with_its_five_event_types() -> None:
    events = load_plan_events(EXAMPLE_PLAN)
    assert [event.event_type for event in events] == [
        "feature_used",
        "page_view",
        "purchase",
        "search",
        "signup",
    ]
    for event in events:
        assert event.version == "1-0-0"
        assert event.description
        assert event.examples
        assert event.metadata["type"] == "object"


def test_a_planned_event_meeting_its_schema_is_accepted(tmp_path: Path) -> None:
    assert checkout_plan(tmp_path).judge("checkout", {"amount": 3}) is ACCEPTED


def test_enforce_refuses_naming_each_field_and_rule(tmp_path: Path) -> None:
    verdict = checkout_plan(tmp_path).judge("checkout", {"coupon": 5})
    assert verdict.refuse
    found = {(violation.path, violation.rule) for violation in verdict.violations}
    assert found == {("/metadata/amount", "required"), ("/metadata/coupon", "type")}


def test_warn_flags_without_refusing_and_off_does_not_check(tmp_path: Path) -> None:
    warned = checkout_plan(tmp_path, enforcement=Enforcement.WARN).judge("checkout", {})
    assert not warned.refuse
    assert [violation.rule for violation in warned.violations] == ["required"]
    off = checkout_plan(tmp_path, enforcement=Enforcement.OFF)
    assert off.judge("checkout", {"amount": "x"}) is ACCEPTED


def test_a_plan_file_may_set_its_own_mode(tmp_path: Path) -> None:
    relaxed = {**CHECKOUT, "enforcement": "warn"}
    plan = TrackingPlan(load_plan_events(write_plan(tmp_path, relaxed)), Enforcement.ENFORCE)
    verdict = plan.judge("checkout", {})
    assert verdict.violations
    assert not verdict.refuse
    assert plan.describe()["event_types"][0]["enforcement"] == "warn"


@pytest.mark.parametrize(
    ("policy", "flagged", "refused"),
    [
        (UnplannedPolicy.ALLOW, False, False),
        (UnplannedPolicy.WARN, True, False),
        (UnplannedPolicy.REFUSE, True, True),
    ],
)
def test_unplanned_event_types_follow_their_policy(
    tmp_path: Path, policy: UnplannedPolicy, flagged: bool, refused: bool
) -> None:
    plan = checkout_plan(tmp_path, unplanned=policy)
    verdict = plan.judge("refund", {"anything": 1})
    assert bool(verdict.violations) is flagged
    assert verdict.refuse is refused
    if flagged:
        assert verdict.violations[0].path == "/event_type"
        assert verdict.rule_label == "unplanned_event"
    assert plan.metric_label("refund") == UNPLANNED_LABEL
    assert plan.metric_label("checkout") == "checkout"


def test_nested_and_unexpected_fields_are_named_by_pointer(tmp_path: Path) -> None:
    nested = planned_event(
        "order",
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "items": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"a/b": {"type": "string"}}},
                }
            },
        },
    )
    plan = TrackingPlan(load_plan_events(write_plan(tmp_path, nested)))
    verdict = plan.judge("order", {"items": [{"a/b": 1}], "extra": True})
    paths = sorted(violation.path for violation in verdict.violations)
    assert paths == ["/metadata/extra", "/metadata/items/0/a~1b"]
    assert pointer_parts("/metadata/items/0/a~1b") == ["metadata", "items", 0, "a/b"]


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        ("event_type: checkout\nversion: 1.0.0\n", "version"),
        ("- not a mapping\n", "checkout.yaml"),
        ("event_type: [unclosed\n", "checkout.yaml"),
    ],
)
def test_an_unreadable_plan_file_is_named(tmp_path: Path, content: str, cause: str) -> None:
    (tmp_path / "checkout.yaml").write_text(content)
    with pytest.raises(PlanError, match=cause):
        load_plan_events(tmp_path)


def test_an_invalid_schema_or_example_is_refused(tmp_path: Path) -> None:
    write_plan(tmp_path / "a", planned_event("bad", {"type": "object", "minProperties": -1}))
    with pytest.raises(PlanError, match=r"bad\.yaml: .*not a valid JSON Schema"):
        load_plan_events(tmp_path / "a")
    wrong_example = {**CHECKOUT, "examples": [{"amount": "ten"}]}
    write_plan(tmp_path / "b", wrong_example)
    with pytest.raises(PlanError, match="example 1 does not meet the schema"):
        load_plan_events(tmp_path / "b")
    write_plan(tmp_path / "c", planned_event("scalar", {"type": "string"}))
    with pytest.raises(PlanError, match="type: object"):
        load_plan_events(tmp_path / "c")


def test_a_file_named_after_another_type_is_refused(tmp_path: Path) -> None:
    write_plan(tmp_path, CHECKOUT)
    (tmp_path / "checkout.yaml").rename(tmp_path / "payment.yaml")
    with pytest.raises(PlanError, match=r"payment\.yaml: holds event type 'checkout'"):
        load_plan_events(tmp_path)


def test_settings_without_a_plan_load_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKING_PLAN_DIR", "")
    assert TrackingPlanSettings(_env_file=None).tracking_plan() is None


def test_settings_read_the_modes_and_load_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKING_PLAN_DIR", str(EXAMPLE_PLAN))
    monkeypatch.setenv("TRACKING_PLAN_ENFORCEMENT", "WARN")
    monkeypatch.setenv("TRACKING_PLAN_UNPLANNED", "refuse")
    plan = TrackingPlanSettings(_env_file=None).tracking_plan()
    assert plan is not None
    assert (plan.enforcement, plan.unplanned) == (Enforcement.WARN, UnplannedPolicy.REFUSE)
    assert plan.planned("page_view") is not None


def test_a_missing_plan_folder_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRACKING_PLAN_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigurationError, match=r"TRACKING_PLAN_DIR: .*nowhere: not a readable"):
        TrackingPlanSettings(_env_file=None).tracking_plan()
