"""Refuse bodies that are too large or not JSON before anything parses them."""

from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.errors import error_response

SINGLE_EVENT_MAX_BYTES = 64 * 1024
BATCH_MAX_BYTES = 1024 * 1024


def _is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


class JsonBodyGuard:
    """ASGI middleware: 415 for non-JSON and 413 over the size limit of each guarded path.

    The body is read here (at most `limit` bytes) and replayed to the app, so an oversized
    body is never buffered in full nor parsed.
    """

    def __init__(self, app: ASGIApp, limits: Mapping[str, int]) -> None:
        """Guard POSTs to the paths in `limits` (path -> maximum body bytes)."""
        self.app = app
        self.limits = dict(limits)

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
        too_large = f"The body is larger than {limit} bytes."
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await error_response(413, "payload_too_large", too_large)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await error_response(413, "payload_too_large", too_large)(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        await self.app(scope, _replay(b"".join(chunks), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
