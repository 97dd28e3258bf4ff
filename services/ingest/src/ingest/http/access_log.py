"""One log line per HTTP request: method, route template, status, duration (and request id)."""

import logging

from starlette.types import Scope

logger = logging.getLogger("ingest.access")

UNMATCHED_ROUTE = "unmatched"


def route_template(scope: Scope) -> str:
    """The matched route's template, never the raw path: paths carry user ids.

    The routers carry their full prefixes (see `ingest.app`), so the template is whole.
    """
    route = scope.get("route")
    path: str | None = getattr(route, "path", None)
    return path or UNMATCHED_ROUTE


def log_request(method: str, route: str, status: int, seconds: float) -> None:
    """Log an answered request (its request id comes with the log record).

    Refusals by the rate limiter are logged at DEBUG only: a client over its limit must not
    be able to flood the log (the limiter logs them aggregated, and counts them).
    """
    level = logging.DEBUG if status == 429 else logging.INFO
    if logger.isEnabledFor(level):
        logger.log(
            level,
            "http request",
            extra={
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 1),
            },
        )
