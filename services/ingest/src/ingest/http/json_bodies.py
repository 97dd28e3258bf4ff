"""JSON request bodies parsed by pydantic-core straight from bytes, and their OpenAPI schema.

The write routes read the raw body and validate it with `model_validate_json` instead of
FastAPI's body parameters: one pass from bytes to model (no intermediate dicts), strict
JSON (invalid UTF-8 and lone surrogates are malformed), and the same error envelope.
"""

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

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


def document_request_bodies(app: FastAPI, *models: type[BaseModel]) -> None:
    """Put `models` (and what they reference) into the app's OpenAPI components."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            _, definitions = models_json_schema(
                [(model, "validation") for model in models], ref_template=_COMPONENTS
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(definitions.get("$defs", {}))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
