"""The one ASGI middleware around every request: id, error envelope, access log, metrics.

One layer, not four: each pure-ASGI layer wraps `send` again, and measured on this machine
the four separate middlewares cost ~25 us of CPU per request more than this one.
"""

import logging
import time

from opentelemetry.trace import Span, SpanKind, Tracer
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from activity_contract.tracing import span_from_headers
from ingest.http.access_log import log_request, route_template
from ingest.http.errors import internal_error_response
from ingest.http.metrics import CLIENT_CLOSED_REQUEST, METRICS_PATH, HttpMetrics
from ingest.http.paths import route_path
from ingest.http.request_ids import HEADER, request_id_of, request_id_reset, request_id_set

logger = logging.getLogger(__name__)

# The W3C trace context a client (or a proxy) may send.
TRACE_HEADERS = (b"traceparent", b"tracestate")


class RequestScope:
    """ASGI middleware: the request's id, the 500 envelope, the access log, the metrics.

    For each HTTP request: assign its id (echoed on the answer and on every log line);
    turn an exception nobody handled into a 500 envelope, logged once, without dropping
    the connection; then log the request and count it (`/metrics` itself is not counted).
    A client that hangs up before its answer (Starlette's `ClientDisconnect`, raised when
    the body is read) is nobody's error: no answer, no traceback, counted with status 499.
    """

    def __init__(self, app: ASGIApp, metrics: HttpMetrics, tracer: Tracer | None = None) -> None:
        """Wrap `app`, counting in `metrics`; with a `tracer`, each request is a span."""
        self.app = app
        self.metrics = metrics
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one request within its scope (and its span, when tracing)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.tracer is None:
            await self._handle(scope, receive, send, None)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in TRACE_HEADERS
        }
        attributes = {"http.request.method": scope["method"], "url.path": scope["path"]}
        with span_from_headers(
            self.tracer, scope["method"], SpanKind.SERVER, carrier, attributes
        ) as span:
            await self._handle(scope, receive, send, span)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, span: Span | None) -> None:
        started = time.perf_counter()
        request_id = request_id_of(scope)
        header = (HEADER, request_id.encode())
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = request_id_set(request_id)  # on every log record until the end
        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            status = CLIENT_CLOSED_REQUEST
            self.metrics.client_disconnects.inc()
        except Exception as error:
            logger.exception(
                "unhandled error",
                extra={"path": scope.get("path", ""), "error_type": type(error).__name__},
            )
            if status:  # too late for an envelope: the server ends the response
                raise
            await internal_error_response()(scope, receive, send_with_id)
        finally:
            if route_path(scope) != METRICS_PATH:
                seconds = time.perf_counter() - started
                route = route_template(scope)
                log_request(scope["method"], route, status or 500, seconds)
                self.metrics.observe(route, scope["method"], status or 500, seconds)
            if span is not None:
                route = route_template(scope)
                span.update_name(f"{scope['method']} {route}")
                span.set_attributes(
                    {"http.route": route, "http.response.status_code": status or 500}
                )
            request_id_reset(token)
