"""The tracking plan: one JSON Schema per event type for its `metadata` (docs/tracking-plan.md).

A plan is a folder of files, one per event type (`<event_type>.yaml`, `.yml` or `.json`),
each with `event_type`, `version` (SchemaVer, MODEL-REVISION-ADDITION), `description`,
`examples` and `metadata` (a JSON Schema object). Both services load it once at start-up,
with every schema compiled to a validator (jsonschema-rs), and judge each event with it:
ingest before publishing, the processor again before storing (it trusts nothing).

With no plan configured nothing here runs: behaviour is that of the envelope alone.
"""

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from activity_contract.events import EventType, PlanViolation

PLAN_SUFFIXES = (".yaml", ".yml", ".json")
SCHEMAVER_PATTERN = r"^[1-9][0-9]*-(0|[1-9][0-9]*)-(0|[1-9][0-9]*)$"
UNPLANNED_RULE = "unplanned_event"
# The `event_type` label of an unplanned event's violations: the type itself is the
# client's choice, and a label per value would let clients grow the metrics without bound.
UNPLANNED_LABEL = "(unplanned)"


class Enforcement(StrEnum):
    """What a violation of a planned event type's schema does."""

    ENFORCE = "enforce"  # refused: 422 at ingest, dead-lettered by the processor
    WARN = "warn"  # accepted and stored, the violations recorded on the event
    OFF = "off"  # not checked


class UnplannedPolicy(StrEnum):
    """What an event whose type the plan does not list does."""

    ALLOW = "allow"
    WARN = "warn"  # accepted and stored, recorded as an `unplanned_event` violation
    REFUSE = "refuse"


class PlannedEvent(BaseModel):
    """One event type of the plan, as its file states it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: EventType
    version: str = Field(
        pattern=SCHEMAVER_PATTERN,
        description="SchemaVer MODEL-REVISION-ADDITION, e.g. 1-0-0.",
    )
    description: str = Field(min_length=1)
    enforcement: Enforcement | None = Field(
        default=None,
        description="This type's own mode; unset: TRACKING_PLAN_ENFORCEMENT.",
    )
    examples: list[dict[str, JsonValue]] = Field(min_length=1)
    metadata: dict[str, Any] = Field(description="A JSON Schema for the event's `metadata`.")

    @model_validator(mode="after")
    def _schema_is_sound(self) -> "PlannedEvent":
        try:
            jsonschema_rs.meta.validate(self.metadata)
        except jsonschema_rs.ValidationError as error:
            raise ValueError(f"metadata is not a valid JSON Schema: {error.message}") from None
        except jsonschema_rs.ReferencingError as error:
            raise ValueError(f"metadata has an unresolvable $ref: {error.message}") from None
        if self.metadata.get("type") != "object":
            raise ValueError("metadata must be a schema of `type: object`, like every metadata")
        validator = jsonschema_rs.validator_for(self.metadata)
        for number, example in enumerate(self.examples, 1):
            problems = [error.message for error in validator.iter_errors(example)]
            if problems:
                raise ValueError(f"example {number} does not meet the schema: {problems[0]}")
        return self

    @property
    def model_version(self) -> int:
        """The MODEL part of the version: a change that breaks readers raises it."""
        return int(self.version.split("-")[0])


@dataclass(frozen=True)
class Verdict:
    """What the plan says of one event: its violations, and whether they refuse it."""

    violations: tuple[PlanViolation, ...] = ()
    refuse: bool = False

    @property
    def rule_label(self) -> str:
        """The first violation's rule (the reason a refusal carries)."""
        return self.violations[0].rule if self.violations else ""


ACCEPTED = Verdict()


@dataclass(frozen=True)
class _CompiledType:
    event: PlannedEvent
    validator: jsonschema_rs.Validator
    enforcement: Enforcement


@dataclass(frozen=True)
class TrackingPlan:
    """A loaded plan with its validators compiled, and the modes it is enforced with."""

    events: tuple[PlannedEvent, ...]
    enforcement: Enforcement = Enforcement.ENFORCE
    unplanned: UnplannedPolicy = UnplannedPolicy.ALLOW
    _compiled: dict[str, _CompiledType] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Compile one validator per event type, once."""
        compiled = {
            event.event_type: _CompiledType(
                event,
                jsonschema_rs.validator_for(event.metadata),
                event.enforcement or self.enforcement,
            )
            for event in self.events
        }
        object.__setattr__(self, "_compiled", compiled)

    def planned(self, event_type: str) -> PlannedEvent | None:
        """The plan's entry for `event_type`, if it has one."""
        compiled = self._compiled.get(event_type)
        return compiled.event if compiled else None

    def judge(self, event_type: str, metadata: Mapping[str, Any]) -> Verdict:
        """The plan's verdict on one event (`ACCEPTED`, the common case, costs one lookup)."""
        compiled = self._compiled.get(event_type)
        if compiled is None:
            return self._unplanned(event_type)
        if compiled.enforcement is Enforcement.OFF or compiled.validator.is_valid(metadata):
            return ACCEPTED
        violations = tuple(
            violation
            for error in compiled.validator.iter_errors(metadata)
            for violation in _violations_of(error)
        )
        return Verdict(violations, refuse=compiled.enforcement is Enforcement.ENFORCE)

    def _unplanned(self, event_type: str) -> Verdict:
        if self.unplanned is UnplannedPolicy.ALLOW:
            return ACCEPTED
        violation = PlanViolation(
            path="/event_type",
            rule=UNPLANNED_RULE,
            message=f"event type {event_type!r} is not in the tracking plan",
        )
        return Verdict((violation,), refuse=self.unplanned is UnplannedPolicy.REFUSE)

    def metric_label(self, event_type: str) -> str:
        """The `event_type` label of a violation's metric (bounded: planned types only)."""
        return event_type if event_type in self._compiled else UNPLANNED_LABEL

    def describe(self) -> dict[str, Any]:
        """The plan as `GET /api/v1/tracking-plan` serves it."""
        return {
            "enforcement": self.enforcement.value,
            "unplanned": self.unplanned.value,
            "event_types": [
                {
                    **event.model_dump(mode="json", exclude_none=True),
                    "enforcement": self._compiled[event.event_type].enforcement.value,
                }
                for event in self.events
            ],
        }


def _violations_of(error: jsonschema_rs.ValidationError) -> Iterable[PlanViolation]:
    """One violation per offending field: a missing or unexpected property is named."""
    rule = error.kind.name
    base = "/metadata" + "".join(f"/{_escape(part)}" for part in error.instance_path)
    details = error.kind.as_dict()
    if rule == "required":
        names = [str(details.get("property", ""))]
    elif rule in ("additionalProperties", "unevaluatedProperties"):
        names = [str(name) for name in details.get("unexpected", [])] or [""]
    else:
        names = [""]
    for name in names:
        path = f"{base}/{_escape(name)}" if name else base
        yield PlanViolation(path=path, rule=rule, message=error.message)


def _escape(part: str | int) -> str:
    """A JSON Pointer reference token (RFC 6901)."""
    return str(part).replace("~", "~0").replace("/", "~1")


def pointer_parts(path: str) -> list[str | int]:
    """The parts of a violation's JSON Pointer, array indexes as integers."""
    parts: list[str | int] = []
    for token in path.split("/")[1:]:
        text = token.replace("~1", "/").replace("~0", "~")
        parts.append(int(text) if text.isdigit() else text)
    return parts


class PlanError(ValueError):
    """A plan that cannot be loaded: the message names the file and the problem."""


def read_plan_files(files: Iterable[tuple[str, str]]) -> tuple[PlannedEvent, ...]:
    """The event types of a plan from `(file name, text)` pairs, sorted by type."""
    events: dict[str, PlannedEvent] = {}
    for name, text in sorted(files):
        try:
            content = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
            event = PlannedEvent.model_validate(content)
        except (yaml.YAMLError, ValueError) as error:
            raise PlanError(f"{name}: {_problem(error)}") from None
        stem = Path(name).stem
        if stem != event.event_type:
            raise PlanError(f"{name}: holds event type {event.event_type!r}: name it {stem!r}")
        if event.event_type in events:
            raise PlanError(f"{name}: event type {event.event_type!r} is planned twice")
        events[event.event_type] = event
    return tuple(events.values())


def load_plan_events(folder: Path) -> tuple[PlannedEvent, ...]:
    """The event types planned in `folder`; `PlanError` naming the file otherwise."""
    if not folder.is_dir():
        raise PlanError(f"{folder}: not a readable folder")
    try:
        files = [
            (path.name, path.read_text(encoding="utf-8"))
            for path in folder.iterdir()
            if path.suffix in PLAN_SUFFIXES
        ]
    except (OSError, UnicodeError) as error:
        raise PlanError(f"{folder}: {error}") from None
    if not files:
        raise PlanError(f"{folder}: holds no plan file (*.yaml, *.yml, *.json)")
    return read_plan_files(files)


def _problem(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']) or 'file'}: {issue['msg']}"
            for issue in error.errors(include_url=False)
        )
    return str(error).splitlines()[0] if str(error) else type(error).__name__
