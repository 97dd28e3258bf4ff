"""Refuse bodies that are not JSON, encoded, too large or too slow, before they are parsed.

The headers are judged before the app runs (415, and 413 for a declared length); the body
itself is bounded while the app reads it (413 past the limit, 408 past the deadline), so
a request refused before it reads its body (429, 401) never has it read. A body the server
received whole before the app ran (`BODY_RECEIVED`, from `ingest.http.connections`) needs
no deadline: most bodies arrive with their headers, and a timer per request is not free.
"""

import asyncio
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.domain_errors import BodyTimeoutError, PayloadTooLargeError
from ingest.http.connections import BODY_RECEIVED
from ingest.http.errors import domain_error_response, error_response
from ingest.http.paths import route_path

SINGLE_EVENT_MAX_BYTES = 64 * 1024
BATCH_MAX_BYTES = 1024 * 1024
# A body must arrive within this many seconds of the request's headers (at least
# ~100 KB/s for the largest batch), so a client cannot hold a connection and a task open
# by announcing a body it never sends.
BODY_TIMEOUT_SECONDS = 10.0


def _body_headers(headers: list[tuple[bytes, bytes]]) -> tuple[str, str, str]:
    """`Content-Type`, `Content-Encoding` (lower case) and `Content-Length`, in one pass.

    The first of each counts, as Starlette's `Headers.get` takes it.
    """
    content_type = encoding = length = None
    for name, value in headers:
        if name == b"content-type":
            content_type = value if content_type is None else content_type
        elif name == b"content-encoding":
            encoding = value if encoding is None else encoding
        elif name == b"content-length":
            length = value if length is None else length
    return (
        (content_type or b"").decode("latin-1"),
        (encoding or b"identity").decode("latin-1").strip().lower(),
        (length or b"").decode("latin-1"),
    )


def _is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


class JsonBodyGuard:
    """ASGI middleware for the POST routes in `limits` (route path -> maximum body bytes).

    Paths are the routes' own, matched under whatever root path the app is served at.
    """

    def __init__(
        self, app: ASGIApp, limits: Mapping[str, int], timeout: float = BODY_TIMEOUT_SECONDS
    ) -> None:
        """Guard the POSTs to the paths in `limits`; bodies must arrive within `timeout`."""
        self.app = app
        self.limits = dict(limits)
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Judge the headers, then pass the request on with its body bounded."""
        limit = self.limits.get(route_path(scope)) if scope["type"] == "http" else None
        if limit is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        content_type, encoding, declared = _body_headers(scope["headers"])
        if not _is_json(content_type):
            response = error_response(
                415, "unsupported_media_type", "Send the body as application/json."
            )
            await response(scope, receive, send)
            return
        if encoding != "identity":
            response = error_response(
                415,
                "unsupported_media_type",
                f"Content-Encoding {encoding!r} is not accepted; send the JSON uncompressed.",
            )
            await response(scope, receive, send)
            return
        if declared.isdigit() and int(declared) > limit:
            too_large = PayloadTooLargeError(f"The body is larger than {limit} bytes.")
            await domain_error_response(too_large)(scope, receive, send)
            return
        # A body the server already holds whole cannot be late: no timer for it.
        deadline = None
        if not scope.get(BODY_RECEIVED):
            deadline = asyncio.get_running_loop().time() + self.timeout
        await self.app(scope, _bounded(receive, limit, deadline, self.timeout), send)


def _bounded(receive: Receive, limit: int, deadline: float | None, timeout: float) -> Receive:
    """`receive` that refuses a body past `limit` bytes or arriving after `deadline`."""
    size = 0

    async def bounded_receive() -> Message:
        nonlocal size
        try:
            if deadline is None:
                message = await receive()
            else:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
        except TimeoutError:
            raise BodyTimeoutError(f"The body did not arrive within {timeout:g} seconds.") from None
        size += len(message.get("body", b""))
        if size > limit:
            raise PayloadTooLargeError(f"The body is larger than {limit} bytes.")
        return message

    return bounded_receive
