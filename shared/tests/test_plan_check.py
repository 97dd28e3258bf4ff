"""`event-tracker-plan check`: incompatible changes need a MODEL bump (SchemaVer)."""

import subprocess
from pathlib import Path
from typing import Any

import pytest

from activity_contract.plan_check import main
from activity_testing.plans import planned_event, write_plan

BASE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["amount"],
    "properties": {
        "amount": {"type": "integer"},
        "coupon": {"type": "string"},
        "items": {
            "type": "array",
            "items": {"type": "object", "properties": {"sku": {"type": "string"}}},
        },
    },
}


def checkout(schema: dict[str, Any], version: str = "1-0-0") -> dict[str, Any]:
    example = {"amount": 1, **({"coupon": "c"} if "coupon" in schema["required"] else {})}
    return planned_event("checkout", schema, version=version, examples=[example])


def plans(tmp_path: Path, new_schema: dict[str, Any], version: str) -> tuple[Path, Path]:
    old = write_plan(tmp_path / "old", checkout(BASE_SCHEMA))
    new = write_plan(tmp_path / "new", checkout(new_schema, version))
    return old, new


def changed(**changes: Any) -> dict[str, Any]:
    properties = {**BASE_SCHEMA["properties"], **changes.pop("properties", {})}
    for name in changes.pop("removed", ()):
        del properties[name]
    return {**BASE_SCHEMA, "properties": properties, **changes}


INCOMPATIBLE = {
    "property removed": (changed(removed=["coupon"]), "metadata/coupon: property removed"),
    "property retyped": (
        changed(properties={"coupon": {"type": "integer"}}),
        "metadata/coupon: type changed from ['string'] to ['integer']",
    ),
    "nested property retyped": (
        changed(
            properties={
                "items": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"sku": {"type": "number"}}},
                }
            }
        ),
        "metadata/items/items/sku: type changed",
    ),
    "new required property": (
        changed(required=["amount", "coupon"]),
        "metadata/coupon: new required property",
    ),
}


@pytest.mark.parametrize("change", INCOMPATIBLE)
def test_an_incompatible_change_under_the_same_version_is_refused(
    tmp_path: Path, change: str, capsys: pytest.CaptureFixture[str]
) -> None:
    schema, problem = INCOMPATIBLE[change]
    old, new = plans(tmp_path, schema, "1-0-0")
    assert main(["check", "--plan", str(new), "--against", str(old)]) == 1
    assert problem in capsys.readouterr().err


@pytest.mark.parametrize("change", INCOMPATIBLE)
def test_an_addition_bump_is_not_enough(tmp_path: Path, change: str) -> None:
    old, new = plans(tmp_path, INCOMPATIBLE[change][0], "1-0-1")
    assert main(["check", "--plan", str(new), "--against", str(old)]) == 1


@pytest.mark.parametrize("change", INCOMPATIBLE)
def test_an_incompatible_change_with_a_model_bump_is_accepted(tmp_path: Path, change: str) -> None:
    old, new = plans(tmp_path, INCOMPATIBLE[change][0], "2-0-0")
    assert main(["check", "--plan", str(new), "--against", str(old)]) == 0


@pytest.mark.parametrize(
    "schema",
    [
        changed(properties={"note": {"type": "string"}}),  # a new optional property
        changed(properties={"coupon": {"type": ["string", "null"]}}),  # a type widened
        changed(properties={"amount": {"type": "number"}}),  # integer to number
        changed(required=[]),  # a property no longer required
    ],
)
def test_compatible_changes_pass(tmp_path: Path, schema: dict[str, Any]) -> None:
    old, new = plans(tmp_path, schema, "1-0-1")
    assert main(["check", "--plan", str(new), "--against", str(old)]) == 0


def test_a_version_moved_backwards_is_refused(tmp_path: Path) -> None:
    old = write_plan(tmp_path / "old", checkout(BASE_SCHEMA, "2-0-0"))
    new = write_plan(tmp_path / "new", checkout(BASE_SCHEMA))
    assert main(["check", "--plan", str(new), "--against", str(old)]) == 1


def git(repo: Path, *arguments: str) -> None:
    subprocess.run(["git", "-C", str(repo), *arguments], check=True, capture_output=True)


def test_against_a_git_revision_with_and_without_a_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "config", "user.email", "test@example.com")
    git(tmp_path, "config", "user.name", "test")
    (tmp_path / "README").write_text("no plan yet\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "no plan")
    monkeypatch.chdir(tmp_path)
    write_plan(tmp_path / "tracking-plan", checkout(BASE_SCHEMA))
    assert main(["check", "--against", "HEAD"]) == 0  # no previous plan: nothing to compare
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "plan")
    write_plan(tmp_path / "tracking-plan", checkout(changed(removed=["coupon"])))
    assert main(["check", "--against", "HEAD"]) == 1
    assert main(["check", "--against", "no-such-revision"]) == 2
