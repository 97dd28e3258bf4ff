"""`event-tracker-plan check`: a changed plan against the previous one, in SchemaVer's spirit.

A change that can break the events already sent or the readers already written (a property
removed, a property's type changed, a new required property) must raise the event type's
MODEL version (`1-0-0` to `2-0-0`); the same change under the same MODEL is refused. The
previous plan is a folder or a git revision (`--against origin/main`); with no previous
plan there is nothing to compare, and the check passes. docs/tracking-plan.md.
"""

import argparse
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from activity_contract.tracking_plan import (
    PLAN_SUFFIXES,
    PlanError,
    PlannedEvent,
    load_plan_events,
    read_plan_files,
)

DEFAULT_PLAN_DIR = Path("tracking-plan")


def _types(schema: Mapping[str, Any]) -> frozenset[str]:
    declared = schema.get("type")
    if declared is None:
        return frozenset()  # any type
    return frozenset([declared] if isinstance(declared, str) else declared)


def _allows(types: frozenset[str], kind: str) -> bool:
    """Whether a value of JSON Schema type `kind` meets `types` (widening is compatible)."""
    return kind in types or (kind == "integer" and "number" in types)


def schema_breaks(old: Mapping[str, Any], new: Mapping[str, Any], where: str) -> list[str]:
    """What in `new` breaks what `old` allowed, walking objects' properties and arrays' items."""
    problems: list[str] = []
    old_types, new_types = _types(old), _types(new)
    if new_types and not (old_types and all(_allows(new_types, kind) for kind in old_types)):
        was = sorted(old_types) if old_types else "any type"
        problems.append(f"{where}: type changed from {was} to {sorted(new_types)}")
    old_properties: Mapping[str, Any] = old.get("properties", {})
    new_properties: Mapping[str, Any] = new.get("properties", {})
    for name, old_property in old_properties.items():
        if name not in new_properties:
            problems.append(f"{where}/{name}: property removed")
        elif isinstance(old_property, Mapping) and isinstance(new_properties[name], Mapping):
            problems += schema_breaks(old_property, new_properties[name], f"{where}/{name}")
    added_required = sorted(set(new.get("required", [])) - set(old.get("required", [])))
    problems += [f"{where}/{name}: new required property" for name in added_required]
    old_items, new_items = old.get("items"), new.get("items")
    if isinstance(old_items, Mapping) and isinstance(new_items, Mapping):
        problems += schema_breaks(old_items, new_items, f"{where}/items")
    return problems


def incompatibilities(
    old_plan: Sequence[PlannedEvent], new_plan: Sequence[PlannedEvent]
) -> list[str]:
    """Each incompatible change made without a MODEL bump, or a version moved backwards."""
    previous = {event.event_type: event for event in old_plan}
    problems: list[str] = []
    for event in new_plan:
        old = previous.get(event.event_type)
        if old is None:
            continue
        old_version = tuple(int(part) for part in old.version.split("-"))
        new_version = tuple(int(part) for part in event.version.split("-"))
        if new_version < old_version:
            problems.append(
                f"{event.event_type}: version {event.version} is lower than {old.version}"
            )
            continue
        if event.model_version > old.model_version:
            continue  # a new MODEL may break anything: readers are told by the version
        breaks = schema_breaks(old.metadata, event.metadata, "metadata")
        problems += [
            f"{event.event_type} {event.version}: {problem}: incompatible without a MODEL "
            f"bump (to {event.model_version + 1}-0-0)"
            for problem in breaks
        ]
    return problems


def _git(*arguments: str) -> subprocess.CompletedProcess[str]:
    # git from PATH, with arguments that are never run by a shell.
    return subprocess.run(["git", *arguments], capture_output=True, text=True, check=False)  # noqa: S603, S607


def plan_at_revision(revision: str, folder: Path) -> tuple[PlannedEvent, ...]:
    """The plan in `folder` as git has it at `revision`; empty when it has none there."""
    listing = _git("ls-tree", "--name-only", f"{revision}:{folder.as_posix()}")
    if listing.returncode != 0:
        if _git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}").returncode != 0:
            raise PlanError(f"{revision}: neither a folder nor a git revision")
        return ()  # the revision exists, without a plan
    files = []
    for name in listing.stdout.split():
        if Path(name).suffix in PLAN_SUFFIXES:
            shown = _git("show", f"{revision}:{folder.as_posix()}/{name}")
            if shown.returncode != 0:
                raise PlanError(f"{revision}:{folder.as_posix()}/{name}: {shown.stderr.strip()}")
            files.append((name, shown.stdout))
    return read_plan_files(files)


def previous_plan(plan_dir: Path, against: str) -> tuple[PlannedEvent, ...]:
    """The plan `against` names: a folder, or `plan_dir` at a git revision (maybe none)."""
    previous = Path(against)
    if previous.is_dir():
        return load_plan_events(previous)
    return plan_at_revision(against, plan_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `event-tracker-plan check --against <folder or git revision>`."""
    parser = argparse.ArgumentParser(prog="event-tracker-plan", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    checking = commands.add_parser("check", help="compare the plan with a previous one")
    checking.add_argument("--plan", type=Path, default=DEFAULT_PLAN_DIR, help="the plan folder")
    checking.add_argument(
        "--against", required=True, help="the previous plan: a folder or a git revision"
    )
    arguments = parser.parse_args(argv)
    try:
        new_plan = load_plan_events(arguments.plan)
        old_plan = previous_plan(arguments.plan, arguments.against)
    except PlanError as error:
        print(f"event-tracker-plan: {error}", file=sys.stderr)  # noqa: T201
        return 2
    if not old_plan:
        print(f"{arguments.against}: no previous plan, nothing to compare")  # noqa: T201
        return 0
    problems = incompatibilities(old_plan, new_plan)
    for problem in problems:
        print(f"incompatible: {problem}", file=sys.stderr)  # noqa: T201
    if problems:
        return 1
    print(f"{arguments.plan}: compatible with {arguments.against}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
