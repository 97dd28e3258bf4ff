"""Request ids: taken from `X-Request-ID` when sane, generated otherwise, echoed back."""

import re
import uuid
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-ID"
_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """ASGI middleware: put the request id in `scope["state"]` and the response headers."""

    def __init__(self, app: ASGIApp) -> None:
        """Wrap `app`."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Assign the id, then echo it on the response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = dict(scope["headers"]).get(HEADER.lower().encode(), b"").decode("latin-1")
        request_id = offered if _ACCEPTABLE.match(offered) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


async def get_request_id(request: Request) -> str:
    """The current request's id."""
    request_id: str = getattr(request.state, "request_id", "") or uuid.uuid4().hex
    return request_id


RequestIdDep = Annotated[str, Depends(get_request_id)]
