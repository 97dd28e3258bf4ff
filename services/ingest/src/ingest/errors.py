"""The SPEC §3.6 error envelope, in one place: domain errors and their handlers."""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

BROKER_RETRY_AFTER_SECONDS = 5
DATABASE_RETRY_AFTER_SECONDS = 5


class ErrorDetail(BaseModel):
    """One problem: where it is and what is wrong."""

    loc: list[str | int] = Field(description="Path to the offending value, e.g. body.events.3.")
    message: str
    type: str
    index: int | None = Field(default=None, description="Batch only: the bad event's index.")


class ErrorBody(BaseModel):
    """Every error response has this shape."""

    error: str = Field(description="Machine-readable code, e.g. `validation_error`.")
    message: str = Field(description="Human-readable sentence.")
    details: list[ErrorDetail] = Field(default_factory=list)


class ApiError(Exception):
    """A failure with a status, a code and a message for the client."""

    status_code = 500
    code = "internal_error"
    message = "The server could not handle the request."

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Sequence[ErrorDetail] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Override the default message, add details or response headers."""
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = list(details)
        self.headers = dict(headers or {})


class BrokerUnavailableError(ApiError):
    """RabbitMQ did not confirm the event: the client should retry later."""

    status_code = 503
    code = "broker_unavailable"
    message = (
        "The event could not be confirmed by the message broker; retry with the same event_id."
    )

    def __init__(self, message: str | None = None) -> None:
        """Answer 503 with `Retry-After`."""
        super().__init__(message, headers={"Retry-After": str(BROKER_RETRY_AFTER_SECONDS)})


class RateLimitedError(ApiError):
    """The client IP is over its rate limit (SPEC §8)."""

    status_code = 429
    code = "rate_limited"
    message = (
        "Too many requests from this client; retry after the number of seconds in Retry-After."
    )

    def __init__(self, retry_after_seconds: int, headers: Mapping[str, str] | None = None) -> None:
        """Answer 429 with `Retry-After` (whole seconds) and any extra headers."""
        super().__init__(
            headers={**(headers or {}), "Retry-After": str(max(1, retry_after_seconds))}
        )


class UnauthorizedError(ApiError):
    """Missing or wrong API key (SPEC §3.5)."""

    status_code = 401
    code = "unauthorized"
    message = "A valid API key is required: send Authorization: Bearer <key>."

    def __init__(self) -> None:
        """Answer 401 with the `WWW-Authenticate` challenge."""
        super().__init__(headers={"WWW-Authenticate": "Bearer"})


class DatabaseUnavailableError(ApiError):
    """MongoDB did not answer the read API in time: the client should retry later."""

    status_code = 503
    code = "database_unavailable"
    message = "Stored activity cannot be read right now; retry later."

    def __init__(self, message: str | None = None) -> None:
        """Answer 503 with `Retry-After`."""
        super().__init__(message, headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})


class InvalidQueryError(ApiError):
    """A query value the schema alone cannot check (a cursor, a range) is wrong."""

    status_code = 422
    code = "validation_error"
    message = "The request does not match the schema."

    def __init__(self, parameter: str, problem: str) -> None:
        """Name the query parameter and what is wrong with it."""
        super().__init__(
            details=[ErrorDetail(loc=["query", parameter], message=problem, type="value_error")]
        )


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Sequence[ErrorDetail] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """Build a JSON response in the error envelope."""
    body = ErrorBody(error=code, message=message, details=list(details))
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True),
        status_code=status_code,
        headers=dict(headers or {}),
    )


def _validation_details(errors: Sequence[Any]) -> list[ErrorDetail]:
    details = []
    for error in errors:
        loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
        index = loc[2] if loc[:2] == ["body", "events"] and len(loc) > 2 else None
        details.append(
            ErrorDetail(
                loc=loc,
                message=str(error.get("msg", "invalid value")),
                type=str(error.get("type", "value_error")),
                index=index if isinstance(index, int) else None,
            )
        )
    return details


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


async def _api_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)  # noqa: S101 - registered for ApiError only
    return error_response(
        error.status_code, error.code, error.message, error.details, error.headers
    )


async def _request_validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)  # noqa: S101 - registered for it only
    errors = error.errors()
    if any(item.get("type") == "json_invalid" for item in errors):
        return error_response(400, "malformed_json", "The request body is not valid JSON.")
    return error_response(
        422,
        "validation_error",
        "The request does not match the schema.",
        _validation_details(errors),
    )


async def _http_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)  # noqa: S101 - registered for it only
    code = _STATUS_CODES.get(error.status_code, "http_error")
    message = error.detail if isinstance(error.detail, str) else "Request failed."
    return error_response(error.status_code, code, message, headers=error.headers)


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    logger.exception(
        "unhandled error", extra={"path": request.url.path, "error_type": type(error).__name__}
    )
    return error_response(500, "internal_error", "The server could not handle the request.")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error with the envelope; nothing internal reaches the client."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Malformed JSON (`malformed_json`).",
        401: "Missing or wrong API key (`unauthorized`).",
        413: "Body too large (`payload_too_large`).",
        415: "Content type is not JSON (`unsupported_media_type`).",
        422: "Schema violation (`validation_error`), one detail per problem.",
        429: "Over the rate limit (`rate_limited`); see `Retry-After`.",
        503: "Not confirmed by RabbitMQ (`broker_unavailable`); see `Retry-After`.",
    }.items()
}

READ_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        401: "Missing or wrong read API key (`unauthorized`).",
        422: "Bad query value or cursor (`validation_error`), one detail per problem.",
        503: "MongoDB unreachable (`database_unavailable`); see `Retry-After`.",
    }.items()
}
