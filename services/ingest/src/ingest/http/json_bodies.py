"""JSON request bodies parsed by pydantic-core straight from bytes, and their OpenAPI schema.

The write routes read the raw body and validate it with `model_validate_json` instead of
FastAPI's body parameters: one pass from bytes to model (no intermediate dicts), strict
JSON (invalid UTF-8 and lone surrogates are malformed), and the same error envelope.
"""

import re
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from activity_contract.tracking_plan import TrackingPlan

ModelT = TypeVar("ModelT", bound=BaseModel)
_COMPONENTS = "#/components/schemas/{model}"


def parse_json_body(model: type[ModelT], body: bytes, context: dict[str, Any]) -> ModelT:
    """`body` validated as `model`; `RequestValidationError` (400 or 422) otherwise."""
    try:
        return model.model_validate_json(body, context=context)
    except ValidationError as error:
        problems = error.errors(include_url=False, include_context=False, include_input=False)
        raise RequestValidationError(
            [{**problem, "loc": ("body", *problem["loc"])} for problem in problems]
        ) from None


def json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose body is `model` as JSON."""
    schema = {"$ref": _COMPONENTS.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def document_request_bodies(
    app: FastAPI, plan: TrackingPlan | None, *models: type[BaseModel]
) -> None:
    """Put `models` (and what they reference) into the app's OpenAPI components.

    With a tracking `plan`, each planned event type's metadata schema too, and its examples
    as examples of the write routes' bodies.
    """
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            _, definitions = models_json_schema(
                [(model, "validation") for model in models], ref_template=_COMPONENTS
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(definitions.get("$defs", {}))
            if plan is not None:
                _document_plan(schema, plan)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def planned_metadata_component(event_type: str) -> str:
    """The OpenAPI component name of a planned type's metadata schema."""
    return "PlannedMetadata." + re.sub(r"[^A-Za-z0-9._-]", "_", event_type)


def _document_plan(schema: dict[str, Any], plan: TrackingPlan) -> None:
    """Each planned type's metadata schema as a component; its examples on the write bodies."""
    components = schema["components"]["schemas"]
    examples: dict[str, Any] = {}
    for event in plan.events:
        components[planned_metadata_component(event.event_type)] = {
            **event.metadata,
            "title": f"{event.event_type} metadata",
            "description": f"{event.description.strip()} (tracking plan version {event.version})",
        }
        for number, metadata in enumerate(event.examples, 1):
            examples[f"{event.event_type}_{number}"] = {
                "summary": f"{event.event_type} ({event.version})",
                "value": {
                    "user_id": "user-123",
                    "event_type": event.event_type,
                    "metadata": metadata,
                },
            }
    planned = ", ".join(
        f"`{event.event_type}` ({planned_metadata_component(event.event_type)})"
        for event in plan.events
    )
    description = (
        f"`metadata` is checked against the tracking plan for its `event_type` "
        f"({plan.enforcement.value}; unplanned types: {plan.unplanned.value}): {planned}. "
        "The plan: `GET /api/v1/tracking-plan`."
    )
    for path, bodies in (("/api/v1/activities", None), ("/api/v1/activities/batch", "events")):
        operation = schema["paths"].get(path, {}).get("post")
        if operation is None:
            continue
        body = operation["requestBody"]
        body["description"] = description
        content = body["content"]["application/json"]
        if bodies is None:
            content["examples"] = examples
        else:
            content["examples"] = {
                "planned_events": {
                    "summary": "One event of each planned type",
                    "value": {bodies: [example["value"] for example in examples.values()]},
                }
            }
