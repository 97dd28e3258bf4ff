"""`GET /api/v1/tracking-plan`: the plan ingest enforces, with its modes (docs/tracking-plan.md)."""

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, JsonValue

from activity_contract.tracking_plan import Enforcement, TrackingPlan, UnplannedPolicy
from ingest.deps import TrackingPlanDep

router = APIRouter(prefix="/api/v1/tracking-plan", tags=["tracking plan"])


class PlannedEventOut(BaseModel):
    """One planned event type: its metadata's JSON Schema, examples, version and mode."""

    event_type: str
    version: str = Field(description="SchemaVer MODEL-REVISION-ADDITION, e.g. `1-0-0`.")
    description: str
    enforcement: Enforcement = Field(description="This type's mode.")
    examples: list[dict[str, JsonValue]]
    metadata: dict[str, Any] = Field(description="JSON Schema of the event's `metadata`.")


class TrackingPlanOut(BaseModel):
    """The tracking plan in force; with none configured, no type and nothing checked."""

    configured: bool
    enforcement: Enforcement = Field(description="Default mode of the planned types.")
    unplanned: UnplannedPolicy = Field(description="What an unplanned event type does.")
    event_types: list[PlannedEventOut]


def plan_out(plan: TrackingPlan | None) -> TrackingPlanOut:
    """The answer for `plan` (None: no plan, today's behaviour)."""
    if plan is None:
        return TrackingPlanOut(
            configured=False,
            enforcement=Enforcement.OFF,
            unplanned=UnplannedPolicy.ALLOW,
            event_types=[],
        )
    return TrackingPlanOut.model_validate({"configured": True, **plan.describe()})


@router.get("")
async def get_tracking_plan(plan: TrackingPlanDep) -> TrackingPlanOut:
    """The tracking plan: one JSON Schema per event type for its `metadata`."""
    return plan_out(plan)
