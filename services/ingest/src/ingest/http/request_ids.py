"""Request ids: from `X-Request-ID` when sane, else generated; on responses and log lines."""

import logging
import re
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_current: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str:
    """The id of the request being handled (empty outside a request)."""
    return _current.get() or ""


class RequestIdMiddleware:
    """ASGI middleware: set the request id for the request's task and its response.

    Outermost of ours, so the 500 envelope, the access log and every log line have it.
    """

    def __init__(self, app: ASGIApp) -> None:
        """Wrap `app`."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Assign the id, run the app, echo the id on the response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = ""
        for name, value in scope["headers"]:
            if name == HEADER:
                offered = value.decode("latin-1")
                break
        request_id = offered if _ACCEPTABLE.match(offered) else uuid.uuid4().hex
        encoded = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (HEADER, encoded)]
            await send(message)

        token = _current.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)


def install_log_record_request_ids() -> None:
    """Give every log record made during a request a `request_id` attribute (idempotent).

    A record factory, not a handler filter, so that every handler (the console, JSON
    lines, pytest's capture) sees it. Code running inside a request must therefore not
    pass `request_id` in `extra=` itself.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "adds_request_id", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        request_id = _current.get()
        if request_id is not None:
            record.request_id = request_id
        return record

    factory.adds_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
