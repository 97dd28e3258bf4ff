"""The tracking plan in the AsyncAPI document: one message per planned event type.

FastStream documents the channel's two message kinds (`ActivityMessage`, a group) from the
publisher's and subscriber's schema; the plan adds, on both sides of `user_activities`, one
message per planned event type: an `ActivityMessage` whose `event_type` is that type and
whose `metadata` is the plan's schema, with the plan's examples. `make asyncapi` documents
the repository's plan (tracking-plan/); the processor's `/asyncapi` page, the plan it runs
with.
"""

from typing import Any
from uuid import NAMESPACE_URL, uuid5

from faststream.specification import AsyncAPI
from faststream.specification.asyncapi.v3_0_0.schema import ApplicationSchema, Message, Reference
from faststream.specification.base import Specification

from activity_contract.events import SCHEMA_VERSION
from activity_contract.topology import CONSUME_OPERATION, PUBLISH_OPERATION
from activity_contract.tracking_plan import PlannedEvent, TrackingPlan

EXAMPLE_TIME = "2026-01-01T12:00:00Z"
_EVENT_SCHEMA = "#/components/schemas/ActivityMessage"


class PlannedAsyncAPI(AsyncAPI):
    """FastStream's AsyncAPI factory, adding the plan's messages to what it generates."""

    def __init__(self, *args: Any, plan: TrackingPlan | None, **kwargs: Any) -> None:
        """As `AsyncAPI`, with the tracking `plan` (None: the document as FastStream makes it)."""
        super().__init__(*args, **kwargs)
        self.plan = plan

    def to_specification(self) -> Specification:
        """The generated document, with one message per planned event type."""
        specification = super().to_specification()
        if self.plan is not None and isinstance(specification, ApplicationSchema):
            add_planned_messages(specification, self.plan)
        return specification


def message_key(event: PlannedEvent) -> str:
    """The key of a planned type's message and payload schema in the components."""
    return f"PlannedEvent.{event.event_type}"


def example_message(event: PlannedEvent, number: int, metadata: dict[str, Any]) -> dict[str, Any]:
    """A whole `ActivityMessage` carrying one of the plan's metadata examples."""
    return {
        "event_id": str(uuid5(NAMESPACE_URL, f"tracking-plan/{event.event_type}/{number}")),
        "user_id": "user-123",
        "event_type": event.event_type,
        "timestamp": EXAMPLE_TIME,
        "metadata": metadata,
        "received_at": EXAMPLE_TIME,
        "schema_version": SCHEMA_VERSION,
    }


def add_planned_messages(specification: ApplicationSchema, plan: TrackingPlan) -> None:
    """Add each planned type's message to the components, the channel and its operations."""
    components = specification.components
    if components is None:
        return
    messages = components.messages if components.messages is not None else {}
    schemas = components.schemas if components.schemas is not None else {}
    for event in plan.events:
        key = message_key(event)
        schemas[key] = {
            "title": key,
            "description": f"An `ActivityMessage` of event type `{event.event_type}`.",
            "allOf": [
                {"$ref": _EVENT_SCHEMA},
                {
                    "type": "object",
                    "properties": {
                        "event_type": {"const": event.event_type},
                        "metadata": event.metadata,
                    },
                },
            ],
        }
        messages[key] = Message.model_validate(
            {
                "name": event.event_type,
                "title": f"{event.event_type} {event.version}",
                "summary": f"Event type `{event.event_type}`, tracking plan version "
                f"{event.version}; travels alone or in a group.",
                "description": event.description.strip(),
                "contentType": "application/json",
                "payload": {"$ref": f"#/components/schemas/{key}"},
                "examples": [
                    {
                        "name": f"{event.event_type}_{number}",
                        "payload": example_message(event, number, metadata),
                    }
                    for number, metadata in enumerate(event.examples, 1)
                ],
                "x-tracking-plan-version": event.version,
            }
        )
        for side in (PUBLISH_OPERATION.title, CONSUME_OPERATION.title):
            channel = specification.channels.get(side)
            operation = specification.operations.get(side)
            if channel is None or operation is None:
                continue
            channel.messages[key] = Reference.model_validate(
                {"$ref": f"#/components/messages/{key}"}
            )
            operation.messages.append(
                Reference.model_validate({"$ref": f"#/channels/{side}/messages/{key}"})
            )
    components.messages, components.schemas = messages, schemas
