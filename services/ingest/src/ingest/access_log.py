"""One INFO line per HTTP request: method, route template, status, duration, request id."""

import logging
import time

from prometheus_fastapi_instrumentator.routing import get_route_name
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("ingest.access")

UNMATCHED_ROUTE = "unmatched"


def _route_template(scope: Scope) -> str:
    # The template, never the raw path: paths carry user ids. Same resolution as the
    # HTTP metrics' `handler` label (FastAPI's included routers hide their prefixes).
    return get_route_name(HTTPConnection(scope), should_include_root_path=False) or (
        UNMATCHED_ROUTE
    )


class AccessLogMiddleware:
    """ASGI middleware logging each request once it was answered.

    Install it inside `RequestIdMiddleware`, which puts the request id in the scope.
    """

    def __init__(self, app: ASGIApp) -> None:
        """Wrap `app`."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, then log it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            logger.info(
                "http request",
                extra={
                    "method": scope["method"],
                    "route": _route_template(scope),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "request_id": scope.get("state", {}).get("request_id"),
                },
            )
