"""Request ids: from `X-Request-ID` when sane, else generated; on responses and log lines."""

import logging
import random
import re
from contextvars import ContextVar, Token

from starlette.types import Scope

HEADER = b"x-request-id"
_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_current: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str:
    """The id of the request being handled (empty outside a request)."""
    return _current.get() or ""


def request_id_of(scope: Scope) -> str:
    """The request's own `X-Request-ID` when it is sane, otherwise a new one."""
    for name, value in scope["headers"]:
        if name == HEADER:
            offered: str = value.decode("latin-1")
            if _ACCEPTABLE.match(offered):
                return offered
            break
    # Unique, not secret: 128 random bits from the process's generator (seeded from the OS
    # at start-up) cost a fraction of a system call per request.
    return f"{random.getrandbits(128):032x}"


def request_id_set(request_id: str) -> Token[str | None]:
    """Make `request_id` the id of the request this task handles (for log records).

    Undo with `request_id_reset(token)` when the request is done (a plain pair, not a
    context manager: this runs on every request).
    """
    return _current.set(request_id)


def request_id_reset(token: Token[str | None]) -> None:
    """End what `request_id_set` began."""
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
