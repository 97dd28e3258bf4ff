"""The two write routes as one plain ASGI handler: the hot path of the service (design §3.1).

`POST /api/v1/activities` and `/api/v1/activities/batch` are declared as FastAPI routes
(`ingest.routes.activities`: the OpenAPI document, and `405` for other methods) but answered
here, before FastAPI's middleware, routing and dependency solving. Measured on this
machine, that machinery cost more CPU per single POST than the work itself. The steps, the
answers and their order are the routes' contract, unchanged:

1. a live local refusal of the client: `429` (no Redis, no body read);
2. `JsonBodyGuard`: `415` for a body that is not plain JSON, `413` for a declared length
   past the route's bound; the body is then bounded while it is read (`413`, `408`);
3. the client's window in Redis (fastapi-limiter's limiter, `ingest.rate_limit`): `429`;
4. the ingest key when `INGEST_API_KEYS` is set: `401`;
5. the body, parsed and validated in one pass, then judged by the tracking plan when one
   is configured (`ingest.plan_checks`): `400`, `422`;
6. the group-commit publish: `202` once RabbitMQ confirmed, else `503` naming every id.

Only the `202` carries the `RateLimit-*` headers, as the FastAPI routes did. `RequestScope`
wraps this handler as it wraps FastAPI: request id, access log, metrics, span, the `500`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from uuid import UUID

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel
from starlette.requests import ClientDisconnect, HTTPConnection
from starlette.types import Message, Receive, Scope, Send

from activity_contract.events import ActivityBatchIn, ActivityIn, ActivityMessage
from ingest.auth import ApiKeys
from ingest.domain_errors import UnauthorizedError
from ingest.http.errors import (
    ANSWERS,
    domain_error_response,
    send_rate_limited,
    validation_error_response,
)
from ingest.http.json_bodies import parse_json_body
from ingest.http.paths import route_path
from ingest.http.request_guards import JsonBodyGuard
from ingest.http.request_ids import current_request_id
from ingest.metrics import IngestMetrics
from ingest.plan_checks import PlanChecks
from ingest.publishing import ActivityPublisher
from ingest.rate_limit import ClientRateLimiter, Verdict

AUTHORIZATION = b"authorization"
# Scope keys: the request's write route (found once, by the dispatcher) and its client's key.
WRITE_ROUTE = "ingest.write_route"
RATE_LIMIT_KEY = "ingest.rate_limit_key"
# The errors the envelope table answers (`ingest.http.errors.ANSWERS`).
DOMAIN_ERRORS = tuple(ANSWERS)


@dataclass(frozen=True)
class WriteRoute:
    """One write route: its declared FastAPI route and the model of its body."""

    route: APIRoute
    model: type[ActivityIn] | type[ActivityBatchIn]
    max_bytes: int


class WritePath:
    """The write routes, answered as plain ASGI (see the module's docstring)."""

    def __init__(
        self,
        routes: Sequence[WriteRoute],
        limiter: ClientRateLimiter,
        ingest_keys: ApiKeys,
        publisher: ActivityPublisher,
        metrics: IngestMetrics,
        plan_checks: PlanChecks | None = None,
    ) -> None:
        """Answer `routes` with `limiter`, `ingest_keys` (none: open), `publisher`.

        With `plan_checks`, the events of each request are judged by the tracking plan.
        """
        self._routes = {write.route.path: write for write in routes}
        self._plan_checks = plan_checks
        self._limiter = limiter
        self._keys = ingest_keys
        self._publisher = publisher
        self._metrics = metrics
        self._guard = JsonBodyGuard(
            self._handle, {write.route.path: write.max_bytes for write in routes}
        )

    def route_of(self, scope: Scope) -> WriteRoute | None:
        """The write route an HTTP request is for (POST to its path), else None."""
        if scope["method"] != "POST":
            return None
        return self._routes.get(route_path(scope))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one POST to a write route: `scope[WRITE_ROUTE]`, found by `route_of`."""
        write: WriteRoute = scope[WRITE_ROUTE]
        scope["route"] = write.route  # its template, for the access log and the metrics
        key = await self._limiter.key(HTTPConnection(scope))
        refused = self._limiter.refused_locally(key)
        if refused is not None:
            await send_rate_limited(send, refused.headers())
            return
        scope[RATE_LIMIT_KEY] = key
        await self._guard(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Steps 3 to 6, under the guard's bounds on the body."""
        write: WriteRoute = scope[WRITE_ROUTE]
        verdict = await self._limiter.counted(scope[RATE_LIMIT_KEY])
        if not verdict.allowed:
            await send_rate_limited(send, verdict.headers())
            return
        if self._keys and not self._keys.accepts(_bearer(scope["headers"])):
            await domain_error_response(UnauthorizedError())(scope, receive, send)
            return
        try:
            await self._accept(write, receive, send, verdict)
        except DOMAIN_ERRORS as error:  # 413, 408 while reading; 413, 503 from publishing
            await domain_error_response(error)(scope, receive, send)
        except RequestValidationError as error:
            await validation_error_response(error.errors())(scope, receive, send)

    async def _accept(
        self, write: WriteRoute, receive: Receive, send: Send, verdict: Verdict
    ) -> None:
        """Steps 5 and 6: read, parse and publish the body's events; answer 202."""
        body = await _read_body(receive)
        received_at = datetime.now(UTC)
        parsed = parse_json_body(write.model, body, {"received_at": received_at})
        events = parsed.events if isinstance(parsed, ActivityBatchIn) else [parsed]
        request_id = current_request_id() or None
        messages = [event.to_message(received_at, request_id) for event in events]
        if self._plan_checks is not None:
            self._plan_checks.apply(messages, batch=isinstance(parsed, ActivityBatchIn))
        self._observe_clock_skew(events, received_at)
        await self._publisher.publish(messages)
        await _send_accepted(send, _accepted(parsed, messages), verdict)

    def _observe_clock_skew(self, events: Sequence[ActivityIn], received_at: datetime) -> None:
        for event in events:
            if event.sent_at is not None:
                skew = abs((event.sent_at - received_at).total_seconds())
                self._metrics.clock_skew.observe(skew)


def _bearer(headers: Sequence[tuple[bytes, bytes]]) -> str:
    """The credentials of `Authorization: Bearer <key>`, or "" (FastAPI's `HTTPBearer`)."""
    for name, value in headers:
        if name == AUTHORIZATION:
            scheme, credentials = get_authorization_scheme_param(value.decode("latin-1"))
            return credentials if scheme.lower() == "bearer" else ""
    return ""


async def _read_body(receive: Receive) -> bytes:
    """The whole body; `ClientDisconnect` if the client hung up first (Starlette's rule)."""
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class AcceptedOut(BaseModel):
    """The event was confirmed by RabbitMQ and will be stored."""

    event_id: UUID
    status: Literal["accepted"] = "accepted"


class BatchAcceptedOut(BaseModel):
    """Every event of the batch was confirmed by RabbitMQ."""

    accepted: int
    event_ids: list[UUID]


def _accepted(parsed: ActivityIn | ActivityBatchIn, messages: list[ActivityMessage]) -> bytes:
    """The `202`'s body, as FastAPI rendered the routes' response models."""
    if isinstance(parsed, ActivityBatchIn):
        batch = BatchAcceptedOut(
            accepted=len(messages), event_ids=[message.event_id for message in messages]
        )
        return batch.model_dump_json().encode()
    # `AcceptedOut`, formatted directly: a UUID's text needs no escaping.
    return b'{"event_id":"%s","status":"accepted"}' % str(messages[0].event_id).encode()


async def _send_accepted(send: Send, body: bytes, verdict: Verdict) -> None:
    headers = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
        *((name.lower().encode(), value.encode()) for name, value in verdict.headers().items()),
    ]
    await send({"type": "http.response.start", "status": 202, "headers": headers})
    await send({"type": "http.response.body", "body": body})
