"""Start-up refused by a dependency for the service's configuration: one line, not a retry.

A wrong password, a missing RabbitMQ vhost or a user without access to it cannot be fixed
by trying again: the service stops at start-up with one line naming the cause and the
variable to fix (never a password). An unreachable dependency is not such a refusal:
what it raises goes on unchanged.
"""

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import unquote, urlsplit

import aiormq
from aiormq.connection import FrameReceiver, ReceivedFrame
from aiormq.exceptions import (
    AMQPError,
    ConnectionClosed,
    InvalidFrameError,
    ProbableAuthenticationError,
)

# RabbitMQ's reply codes when it closes a connection during the handshake.
ACCESS_REFUSED = 403  # wrong password or unknown user
NOT_ALLOWED = 530  # vhost missing, no permission on it, or a connection limit reached
# The second handshake that reads RabbitMQ's reply text gets this long.
REPLY_PROBE_SECONDS = 5.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class DependencyRefusedError(Exception):
    """A dependency refused the configured credentials or names; its message says which.

    Not a `SystemExit`: it is raised inside the event loop, which a `SystemExit` would
    leave without cleaning up. `StartupFailureLine` reports it as its one line.
    """


@asynccontextmanager
async def broker_refusals_named(url: str) -> AsyncIterator[None]:
    """Turn RabbitMQ refusing the connection to `url` into a `DependencyRefusedError`."""
    try:
        yield
    except AMQPError as error:
        cause = await _refusal_cause(error, url)
        if cause is None:
            raise
        raise DependencyRefusedError(
            f"RabbitMQ refused the connection: {cause} (RABBITMQ_URL)"
        ) from None


async def _refusal_cause(error: AMQPError, url: str) -> str | None:
    if isinstance(error, ProbableAuthenticationError):
        return _cause(url, ACCESS_REFUSED, str(error))
    code = error.args[0] if isinstance(error, ConnectionClosed) and error.args else None
    if code in (ACCESS_REFUSED, NOT_ALLOWED):
        return _cause(url, code, str(error.args[-1]))
    # aiormq 7.2 checks for the expected answer before it checks for a Connection.Close,
    # so RabbitMQ refusing Connection.Open arrives as "Expected one of
    # ['Connection.OpenOk'], got <Connection.Close ...>", its reply text dropped.
    if isinstance(error, InvalidFrameError) and "Connection.Close" in str(error):
        reply = await _handshake_reply(url)
        if reply is None:
            user, vhost = _user_and_vhost(url)
            return f"it closed the connection opening vhost '{vhost}' for user '{user}'"
        return _cause(url, *reply)
    return None


def _cause(url: str, code: int, reply: str) -> str:
    """The refusal in words, from RabbitMQ's reply code and text."""
    user, vhost = _user_and_vhost(url)
    if code == ACCESS_REFUSED:
        return f"authentication failed for user '{user}': wrong password or unknown user"
    if code == NOT_ALLOWED and reply.endswith("not found"):
        return f"vhost '{vhost}' does not exist"
    if code == NOT_ALLOWED and reply.endswith(f"refused for user '{user}'"):
        return f"user '{user}' has no permissions on vhost '{vhost}'"
    return reply  # e.g. a connection limit: RabbitMQ's own words


def _user_and_vhost(url: str) -> tuple[str, str]:
    """The user and vhost an AMQP URL names, as aiormq reads them (never the password)."""
    parts = urlsplit(url)
    return unquote(parts.username or "guest"), unquote(parts.path[1:]) or "/"


async def _handshake_reply(url: str) -> tuple[int, str] | None:
    """RabbitMQ's reply code and text when it refuses a handshake with `url`, else None."""
    connection = _ReplyReadingConnection(url)
    try:
        async with asyncio.timeout(REPLY_PROBE_SECONDS):
            await connection.connect()
    except ConnectionClosed as refused:
        return refused.args[0], refused.args[1]
    except (AMQPError, OSError, TimeoutError):
        return None
    with suppress(AMQPError, OSError):
        await connection.close()
    return None  # accepted this time


class _RememberingReceiver(FrameReceiver):
    """aiormq's frame reader that keeps the last frame it read."""

    last: object = None

    async def get_frame(self) -> ReceivedFrame:
        """Read a frame and keep it."""
        received = await super().get_frame()
        self.last = received[2]
        return received


class _ReplyReadingConnection(aiormq.Connection):
    """aiormq's connection, raising `ConnectionClosed` with RabbitMQ's reply on a refusal.

    Used once, after a refused start-up, only to read why: its handshake is aiormq's own,
    each frame remembered, so the Connection.Close aiormq reports as unexpected is read.
    """

    @staticmethod
    async def _rpc(
        request: Any,
        writer: asyncio.StreamWriter,
        frame_receiver: FrameReceiver,
        wait_response: bool = True,
    ) -> Any:
        receiver = _RememberingReceiver(frame_receiver.reader)
        try:
            return await aiormq.Connection._rpc(request, writer, receiver, wait_response)
        except InvalidFrameError:
            close = receiver.last
            if isinstance(close, aiormq.spec.Connection.Close):
                raise ConnectionClosed(close.reply_code, close.reply_text) from None
            raise


class StartupFailureLine:
    """ASGI wrapper: a start-up stopped by a `DependencyRefusedError` reports its one line.

    Starlette and FastStream send `lifespan.startup.failed` with the whole traceback, from
    the `except` block that handles the error; for a refusal, the message is the line.
    Everything else passes through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        """Wrap `app`."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the call on; shorten a refused start-up's failure message."""
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_line(message: Message) -> None:
            error = sys.exc_info()[1]
            if message["type"] == "lifespan.startup.failed" and isinstance(
                error, DependencyRefusedError
            ):
                message = {**message, "message": str(error)}
            await send(message)

        await self.app(scope, receive, send_line)
