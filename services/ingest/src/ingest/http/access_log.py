"""One log line per HTTP request: method, route template, status, duration (and request id)."""

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("ingest.access")

UNMATCHED_ROUTE = "unmatched"


def route_template(scope: Scope) -> str:
    """The matched route's template, never the raw path: paths carry user ids.

    The routers carry their full prefixes (see `ingest.app`), so the template is whole.
    """
    route = scope.get("route")
    path: str | None = getattr(route, "path", None)
    return path or UNMATCHED_ROUTE


class AccessLogMiddleware:
    """ASGI middleware logging each request once it was answered.

    Refusals by the rate limiter are logged at DEBUG only: a client over its limit must not
    be able to flood the log (the limiter logs them aggregated, and counts them).
    Install it inside `RequestIdMiddleware`, so each line carries the request id.
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
            level = logging.DEBUG if status == 429 else logging.INFO
            if logger.isEnabledFor(level):
                logger.log(
                    level,
                    "http request",
                    extra={
                        "method": scope["method"],
                        "route": route_template(scope),
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    },
                )
