"""`asyncapi.yaml` is generated from the code and must be current."""

import subprocess
import sys
from pathlib import Path

import yaml

from activity_contract.tracking_plan import load_plan_events
from activity_testing.plans import EXAMPLE_PLAN
from activity_testing.processes import venv_script

ROOT = Path(__file__).resolve().parents[3]


def test_committed_asyncapi_matches_a_fresh_generation(tmp_path: Path) -> None:
    fresh = tmp_path / "asyncapi.yaml"
    subprocess.run(
        [
            venv_script("faststream"),
            "docs",
            "gen",
            "--factory",
            "processor.app:create_asyncapi_app",
            "--yaml",
            "--out",
            str(fresh),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
        # The repository's tracking plan, as `make asyncapi` documents it.
        env={"PATH": str(Path(sys.executable).parent), "TRACKING_PLAN_DIR": str(EXAMPLE_PLAN)},
    )
    committed = (ROOT / "asyncapi.yaml").read_text()
    # Compared as documents: FastStream keeps publishers in a WeakSet, so the order of the
    # channels in its output changes from one generation to the next.
    assert yaml.safe_load(fresh.read_text()) == yaml.safe_load(committed), (
        "asyncapi.yaml is stale: run `make asyncapi`"
    )


def test_asyncapi_describes_both_sides_of_the_channel() -> None:
    spec = yaml.safe_load((ROOT / "asyncapi.yaml").read_text())
    assert spec["asyncapi"].startswith("3.")
    actions = {
        operation["action"]
        for operation in spec["operations"].values()
        if operation["channel"]["$ref"].startswith("#/channels/user_activities")
    }
    assert actions == {"send", "receive"}
    addresses = {channel["address"] for channel in spec["channels"].values()}
    assert addresses == {"user_activities", "user_activities.dlq"}
    schemas = spec["components"]["schemas"]
    message = schemas["ActivityMessage"]
    assert set(message["required"]) >= {"event_id", "user_id", "event_type", "timestamp"}
    assert all("description" in field for field in message["properties"].values())
    assert spec["servers"]


def test_asyncapi_documents_every_message_kind_on_the_channel() -> None:
    spec = yaml.safe_load((ROOT / "asyncapi.yaml").read_text())
    schemas = spec["components"]["schemas"]
    kinds = {"#/components/schemas/ActivityMessage", "#/components/schemas/ActivityGroupMessage"}
    for side in ("user_activities:consume", "user_activities:publish"):
        payload = schemas[f"{side}:Message:Payload"]
        assert {option["$ref"] for option in payload["oneOf"]} == kinds
    group = schemas["ActivityGroupMessage"]
    assert group["properties"]["events"]["items"]["$ref"] == "#/components/schemas/ActivityMessage"
    assert "request_id" in schemas["ActivityMessage"]["properties"]


def test_each_planned_event_type_is_a_message_of_the_channel() -> None:
    spec = yaml.safe_load((ROOT / "asyncapi.yaml").read_text())
    messages, schemas = spec["components"]["messages"], spec["components"]["schemas"]
    for event in load_plan_events(EXAMPLE_PLAN):
        key = f"PlannedEvent.{event.event_type}"
        for side in ("user_activities:consume", "user_activities:publish"):
            assert spec["channels"][side]["address"] == "user_activities"
            assert key in spec["channels"][side]["messages"], (side, key)
            refs = {ref["$ref"] for ref in spec["operations"][side]["messages"]}
            assert f"#/channels/{side}/messages/{key}" in refs
        message = messages[key]
        assert message["name"] == event.event_type
        assert event.version in message["title"]
        assert [example["payload"]["metadata"] for example in message["examples"]] == (
            event.examples
        )
        planned = schemas[key]["allOf"][1]["properties"]
        assert planned["event_type"] == {"const": event.event_type}
        assert planned["metadata"] == event.metadata
