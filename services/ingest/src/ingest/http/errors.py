"""The design §3.6 error envelope in one place: each error's status, the handlers, the 500."""

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Send

from ingest.domain_errors import (
    BodyTimeoutError,
    BrokerUnavailableError,
    DatabaseUnavailableError,
    InvalidQueryError,
    PayloadTooLargeError,
    UnauthorizedError,
)

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


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
    event_ids: list[UUID] | None = Field(
        default=None,
        description="503 of a write only: the id of every event of the request, including "
        "those the server assigned. Retry with these ids so nothing is stored twice.",
    )


class RateLimitedError(Exception):
    """The client is over its rate limit (design §8); `headers` say when to come back."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        """Answer 429 with `Retry-After` and the `RateLimit-*` headers."""
        super().__init__()
        self.headers = dict(headers)


@dataclass(frozen=True)
class _Answer:
    """How one kind of error is answered; `message` unless the error carries its own."""

    status: int
    code: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


_RETRY_LATER = {"Retry-After": str(RETRY_AFTER_SECONDS)}
# Every error ingest's own code raises, and its answer: the one place that knows both.
ANSWERS: dict[type[Exception], _Answer] = {
    BrokerUnavailableError: _Answer(
        503,
        "broker_unavailable",
        "The events could not be confirmed by the message broker; retry later with the "
        "same event ids (listed in event_ids).",
        _RETRY_LATER,
    ),
    DatabaseUnavailableError: _Answer(
        503,
        "database_unavailable",
        "Stored activity cannot be read right now; retry later.",
        _RETRY_LATER,
    ),
    PayloadTooLargeError: _Answer(413, "payload_too_large", "The body is too large."),
    # The connection is closed after the answer: the rest of the body may still come.
    BodyTimeoutError: _Answer(
        408, "request_timeout", "The body did not arrive in time.", {"Connection": "close"}
    ),
    UnauthorizedError: _Answer(
        401,
        "unauthorized",
        "A valid API key is required: send Authorization: Bearer <key>.",
        {"WWW-Authenticate": "Bearer"},
    ),
    InvalidQueryError: _Answer(422, "validation_error", "The request does not match the schema."),
    RateLimitedError: _Answer(
        429,
        "rate_limited",
        "Too many requests from this client; retry after the number of seconds in Retry-After.",
    ),
}


def domain_error_response(error: Exception) -> Response:
    """The envelope for an error of `ANSWERS`: its status, code, message and headers."""
    answer = ANSWERS[type(error)]
    headers = dict(answer.headers)
    details: list[ErrorDetail] = []
    event_ids = None
    if isinstance(error, RateLimitedError):
        headers.update(error.headers)
    elif isinstance(error, InvalidQueryError):
        details = [
            ErrorDetail(loc=["query", name], message=problem, type="value_error")
            for name, problem in error.problems
        ]
    elif isinstance(error, BrokerUnavailableError):
        event_ids = error.event_ids
    message = str(error) or answer.message
    return error_response(answer.status, answer.code, message, details, headers, event_ids)


# The 429 body never varies (its headers do): serialized once, for the refusals answered
# on the write path (`ingest.http.write_path`), which must stay cheap.
_RATE_LIMITED = ANSWERS[RateLimitedError]
RATE_LIMITED_JSON = (
    ErrorBody(error=_RATE_LIMITED.code, message=_RATE_LIMITED.message)
    .model_dump_json(exclude_none=True)
    .encode()
)


async def send_rate_limited(send: Send, headers: Mapping[str, str]) -> None:
    """Answer 429 in the envelope with `headers`, straight to the ASGI `send`."""
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(RATE_LIMITED_JSON)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in headers.items()),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": raw_headers})
    await send({"type": "http.response.body", "body": RATE_LIMITED_JSON})


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Sequence[ErrorDetail] = (),
    headers: Mapping[str, str] | None = None,
    event_ids: Sequence[UUID] | None = None,
) -> Response:
    """A JSON response in the error envelope, serialized by pydantic-core."""
    body = ErrorBody(
        error=code,
        message=message,
        details=list(details),
        event_ids=None if event_ids is None else list(event_ids),
    )
    return Response(
        body.model_dump_json(exclude_none=True),
        status_code=status_code,
        headers=dict(headers or {}),
        media_type="application/json",
    )


def validation_details(errors: Sequence[Any]) -> list[ErrorDetail]:
    """One detail per validation problem, with the batch index where there is one."""
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
    400: "malformed_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


async def _domain_error(_: Request, error: Exception) -> Response:
    return domain_error_response(error)


async def _request_validation_error(_: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)  # noqa: S101 - registered for it only
    return validation_error_response(error.errors())


def validation_error_response(errors: Sequence[Any]) -> Response:
    """`400 malformed_json` for a body that is not JSON, else `422` with one detail each."""
    if any(item.get("type") == "json_invalid" for item in errors):
        return error_response(
            400, "malformed_json", "The request body is not valid JSON (UTF-8, RFC 8259)."
        )
    return error_response(
        422,
        "validation_error",
        "The request does not match the schema.",
        validation_details(errors),
    )


def install_error_handlers(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """Answer every expected error with the envelope (the middleware below does the rest).

    A 405 names every method of its path: Starlette's names only the first route's, and
    `/api/v1/users/{user_id}/activities` has a route for GET and one for DELETE.
    """
    methods: dict[str, set[str]] = defaultdict(set)
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute):
                methods[route.path] |= route.methods or set()

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)  # noqa: S101 - registered for it
        code = _STATUS_CODES.get(error.status_code, "http_error")
        message = error.detail if isinstance(error.detail, str) else "Request failed."
        headers = dict(error.headers or {})
        route_path = getattr(request.scope.get("route"), "path", None)
        if error.status_code == 405 and route_path in methods:
            headers["Allow"] = ", ".join(sorted(methods[route_path]))
        return error_response(error.status_code, code, message, headers=headers)

    for error_type in ANSWERS:
        app.add_exception_handler(error_type, _domain_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


def internal_error_response() -> Response:
    """The 500 envelope: nothing about the failure reaches the client."""
    return error_response(500, "internal_error", "The server could not handle the request.")


def _responses(descriptions: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": ErrorBody, "description": description}
        for status, description in descriptions.items()
    }


WRITE_ERROR_RESPONSES = _responses(
    {
        400: "Malformed JSON (`malformed_json`): not parseable, not UTF-8, NaN or Infinity.",
        401: "Missing or wrong API key (`unauthorized`).",
        408: "The body did not arrive in time (`request_timeout`).",
        413: "Body too large (`payload_too_large`).",
        415: "Content type is not JSON, or a content encoding (`unsupported_media_type`).",
        422: "Schema violation (`validation_error`), one detail per problem.",
        429: "Over the rate limit (`rate_limited`); see `Retry-After`.",
        503: "Not confirmed by RabbitMQ (`broker_unavailable`); see `Retry-After` and "
        "retry with the ids in `event_ids`.",
    }
)

ERASURE_ERROR_RESPONSES = _responses(
    {
        401: "Missing or wrong admin key (`unauthorized`): only ADMIN_API_KEYS work here.",
        429: "Over the admin rate limit (`rate_limited`); see `Retry-After`.",
        503: "MongoDB unreachable (`database_unavailable`); may be partly done: retry.",
    }
)

READ_ERROR_RESPONSES = _responses(
    {
        401: "Missing or wrong read API key (`unauthorized`).",
        422: "Bad query value or cursor (`validation_error`), one detail per problem.",
        429: "Over the read rate limit (`rate_limited`); see `Retry-After`.",
        503: "MongoDB unreachable or too slow (`database_unavailable`); see `Retry-After`.",
    }
)
