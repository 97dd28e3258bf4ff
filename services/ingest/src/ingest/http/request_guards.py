"""Refuse bodies before anything parses them: not JSON, encoded, too large, or too slow."""

import asyncio
from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.http.errors import error_response

SINGLE_EVENT_MAX_BYTES = 64 * 1024
BATCH_MAX_BYTES = 1024 * 1024
# A body must arrive within this many seconds of the request's headers (at least
# ~100 KB/s for the largest batch), so a client cannot hold a connection and a task open
# by announcing a body it never sends.
BODY_TIMEOUT_SECONDS = 10.0


def _is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


class JsonBodyGuard:
    """ASGI middleware: 415, 413 or 408 before the body is parsed, on each guarded path.

    The body is read here (at most `limit` bytes, within BODY_TIMEOUT_SECONDS) and
    replayed to the app, so an oversized body is never buffered in full nor parsed.
    """

    def __init__(
        self, app: ASGIApp, limits: Mapping[str, int], timeout: float = BODY_TIMEOUT_SECONDS
    ) -> None:
        """Guard POSTs to the paths in `limits` (path -> maximum body bytes)."""
        self.app = app
        self.limits = dict(limits)
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request, then pass it on with its body replayed."""
        limit = self.limits.get(scope.get("path", "")) if scope["type"] == "http" else None
        if limit is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not _is_json(headers.get("content-type", "")):
            response = error_response(
                415, "unsupported_media_type", "Send the body as application/json."
            )
            await response(scope, receive, send)
            return
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            response = error_response(
                415,
                "unsupported_media_type",
                f"Content-Encoding {encoding!r} is not accepted; send the JSON uncompressed.",
            )
            await response(scope, receive, send)
            return
        too_large = f"The body is larger than {limit} bytes."
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await error_response(413, "payload_too_large", too_large)(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.timeout):
                body = await _read_body(receive, limit)
        except TimeoutError:
            response = error_response(
                408,
                "request_timeout",
                f"The body did not arrive within {self.timeout:g} seconds.",
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        if body is None:  # the client went away
            return
        if len(body) > limit:
            await error_response(413, "payload_too_large", too_large)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The body, or just past `limit` bytes of it; None when the client disconnected."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > limit or not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
