"""The HTTP edge holds against hostile connections: bounded headers, deadlines, a cap.

uvicorn's httptools protocol bounds neither a request's headers nor the time a client takes
to send them (its keep-alive timer runs only after a response), and takes any number of
connections. `GuardedProtocol` is that protocol with, per connection:

- a bound on the bytes of a request line and its headers, counted as they arrive (an
  integer add and a comparison per read), and one on their number: past either, the answer
  is `431` and the connection is closed, so never-ending headers hold no more than the bound
  (a request pipelined behind another in one read is counted from its next read: at most
  one read, 256 KiB, more);
- a header deadline, from the connection's opening (a client that sends nothing) and from
  the first read of each later request, until its headers are complete: then the
  connection is closed (with a `408` when the request had begun and no answer is under way);
- a body deadline, from the headers until the request is complete: then the connection is
  closed (the app, if it still reads the body, sees `http.disconnect`); a request whose
  body is complete says so in its scope (`BODY_RECEIVED`);
- a cap on the open connections of the worker process: one more is closed at once;
- and one write per small response: uvicorn writes a response's head and its body apart,
  two system calls and two packets on a `TCP_NODELAY` socket; `OneWriteCycle` holds the
  head until the first part of the body and writes both at once (py-spy: the response's
  writes were the largest single share of a single POST's CPU; one write halves them).

Each closure is counted (`event_tracker_ingest_connections_closed_total{reason}`) and logged
aggregated, at most one INFO line per `CLOSURE_LOG_SECONDS`, never a line per connection.

uvicorn builds the protocol for each connection from `uvicorn.run(http=...)`; pass
`functools.partial(GuardedProtocol, limits=...)`, which pickles to worker processes. The
closures are counted on the app's registry through uvicorn's lifespan state (the app's
lifespan yields `{CONNECTION_CLOSURES: ConnectionClosures(...)}`).
"""

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httptools
from prometheus_client import CollectorRegistry
from uvicorn._types import ASGI3Application, ASGISendEvent
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from ingest.http.metrics import ClosureReason, ConnectionMetrics

logger = logging.getLogger(__name__)

# The key of the app's `ConnectionClosures` in uvicorn's lifespan state.
CONNECTION_CLOSURES = "ingest.connection_closures"
# Set in a request's ASGI scope once the server holds its whole body (the app may skip
# waiting for it with a deadline).
BODY_RECEIVED = "ingest.body_received"
# Closures are logged aggregated, at most once per this many seconds.
CLOSURE_LOG_SECONDS = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may take; `max_connections` is per worker process."""

    max_header_bytes: int
    max_headers: int
    header_timeout_seconds: float
    body_timeout_seconds: float
    max_connections: int


class ConnectionClosures:
    """Connections the edge closed: counted per reason, logged aggregated.

    The first closure is logged at once, later ones at most one line per `interval` with
    the count of each reason since the last line (the counter has every one).
    """

    def __init__(self, metrics: ConnectionMetrics, interval: float = CLOSURE_LOG_SECONDS) -> None:
        """Count in `metrics`; log at most once per `interval` seconds."""
        self._metrics = metrics
        self._interval = interval
        self._unlogged: dict[str, int] = {}
        self._next_log = 0.0

    def record(self, reason: ClosureReason) -> None:
        """Count one closure for `reason`; log the interval's counts when it is over."""
        self._metrics.count_closed(reason)
        self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
        now = time.monotonic()
        if now < self._next_log:
            return
        logger.info("connections closed", extra=self._unlogged)
        self._unlogged = {}
        self._next_log = now + self._interval


class _TooManyHeadersError(Exception):
    """Raised by the header callback past the header count.

    httptools stops at a callback's exception for good (every later `feed_data` raises
    again) and raises `HttpParserCallbackError` with it as `__context__`; `_feed` answers it.
    """


class _HeadHeld:
    """A response's connection: the head's one write waits to go with the next write."""

    __slots__ = ("head", "holding", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        """Write to `transport`; nothing held yet."""
        self.transport = transport
        self.holding = False  # set by the cycle while it writes the head
        self.head = b""

    def write(self, data: bytes) -> None:
        """Hold the head; write anything else after what is held, in one call."""
        if self.holding:
            self.head += data
            return
        if self.head:
            data, self.head = self.head + data, b""
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        """Everything else is the transport's own (`close`, `is_closing`, ...)."""
        return getattr(self.transport, name)


class OneWriteCycle(RequestResponseCycle):
    """uvicorn's request-response cycle (0.54), its head written with its first body part.

    A response whose body never comes has its held head dropped with the connection, which
    uvicorn closes then anyway. `100 Continue` is written at once (not part of a head).
    """

    transport: _HeadHeld  # type: ignore[assignment]

    async def send(self, message: ASGISendEvent) -> None:
        """Send as uvicorn does, the head held back until the body's first write."""
        if message["type"] != "http.response.start":
            await super().send(message)
            return
        self.transport.holding = True
        try:
            await super().send(message)
        finally:
            self.transport.holding = False


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header bounds, deadlines and a connection cap."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        """A protocol for one connection, held to `limits`."""
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._max_header_bytes = limits.max_header_bytes
        self._max_headers = limits.max_headers
        # From the connection's opening and from each request's end until the next
        # request's headers are complete, the bytes received count toward the bound.
        self._reading_headers = True
        self._header_bytes = 0
        self._reading_body = False
        # The one armed deadline: the header deadline or the body deadline.
        self._deadline: asyncio.TimerHandle | None = None

    # --- Connection ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Take the connection, or close it at once when the process holds its cap."""
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._reading_headers = False
            transport.close()
            self._record("over_capacity")
            return
        self._deadline = self.loop.call_later(
            self.limits.header_timeout_seconds, self._headers_timed_out
        )

    def connection_lost(self, exc: Exception | None) -> None:
        """Cancel the deadline, then let uvicorn end the request (the app sees a disconnect)."""
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Count header bytes, parse, and arm a deadline if a request is left incomplete.

        Headers and body often come in one read: only a read that passes the bound is
        looked at more closely (`_receive_past_header_budget`).
        """
        if self._reading_headers:
            self._header_bytes += len(data)
            if self._header_bytes > self._max_header_bytes:
                self._receive_past_header_budget(data)
                return
        self._feed(data)
        if self._deadline is None and (
            self._reading_body or (self._reading_headers and self._header_bytes)
        ):
            self._arm_deadline()

    # --- Parser callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        """Stop the parser past the header count, else keep the header as uvicorn does.

        uvicorn's own `on_header` (0.54) is inlined: it runs for every header of every request.
        """
        if len(self.headers) >= self._max_headers:
            raise _TooManyHeadersError
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        """End the header deadline; the body's runs from the end of this read if needed."""
        self._reading_headers = False
        self._reading_body = True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """End the body deadline; bytes from now on count toward the next request's headers."""
        super().on_message_complete()
        scope: dict[str, Any] = self.scope  # type: ignore[assignment]
        scope[BODY_RECEIVED] = True  # this request's scope: the next one is made later
        self._reading_body = False
        self._reading_headers = True
        self._header_bytes = 0
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        """Start the request's task, its cycle writing each response's head with its body."""
        cycle.__class__ = OneWriteCycle  # the same object, uvicorn's `send` extended
        cycle.transport = _HeadHeld(cycle.transport)  # type: ignore[assignment]
        super()._start_asgi_task(cycle, app)

    # --- Internals -----------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        """Parse `data` as uvicorn's own `data_received` (0.54) does, refusals answered here.

        uvicorn would answer a callback's refusal `400`, with a warning logged per request.
        """
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, _TooManyHeadersError):
                self._refuse_headers("too_many_headers")
            else:
                self._answer_invalid_request()
        except httptools.HttpParserError:
            self._answer_invalid_request()
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():  # the connection is the WebSocket protocol's now
                self._reading_headers = self._reading_body = False
                self._cancel_deadline()
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def _answer_invalid_request(self) -> None:
        self._reading_headers = self._reading_body = False
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self.send_400_response(message)

    def _receive_past_header_budget(self, data: bytes) -> None:
        """Feed what fits the bound; refuse if the headers are still incomplete there.

        The part of `data` past the bound is body or a pipelined request (counted anew).
        """
        bound = self._max_header_bytes
        while True:
            room = bound - (self._header_bytes - len(data))
            if room:
                self._feed(data[:room])
            if self.transport.is_closing() or not (self._reading_headers or self._reading_body):
                return  # answered and closed, or handed to another protocol (an upgrade)
            if self._reading_headers and self._header_bytes:  # the same request's headers
                self._refuse_headers("headers_too_large")
                return
            data = data[room:]
            if not data:
                break
            if self._reading_headers:
                self._header_bytes += len(data)
                if self._header_bytes > bound:
                    continue
            self._feed(data)
            break
        if self._deadline is None:
            self._arm_deadline()

    def _arm_deadline(self) -> None:
        """After a read that left a request incomplete: its header or body deadline."""
        if self.transport.is_closing():
            return
        if self._reading_headers:
            if self._header_bytes:
                self._deadline = self.loop.call_later(
                    self.limits.header_timeout_seconds, self._headers_timed_out
                )
        elif self._reading_body:
            self._deadline = self.loop.call_later(
                self.limits.body_timeout_seconds, self._body_timed_out
            )

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._header_bytes and self._no_answer_under_way():
            self.transport.write(
                self._plain_answer(408, b"The request headers did not arrive in time.")
            )
        self._close("header_timeout")

    def _body_timed_out(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self._close("body_timeout")

    def _refuse_headers(self, reason: ClosureReason) -> None:
        self._cancel_deadline()
        if self._no_answer_under_way():
            text = (
                b"The request line and headers are larger than %d bytes."
                % self.limits.max_header_bytes
                if reason == "headers_too_large"
                else b"The request has more than %d header fields." % self.limits.max_headers
            )
            self.transport.write(self._plain_answer(431, text))
        self._close(reason)

    def _no_answer_under_way(self) -> bool:
        """Whether an answer can be written: none to an earlier request is unfinished."""
        return self.cycle is None or self.cycle.response_complete

    def _close(self, reason: ClosureReason) -> None:
        self._reading_headers = self._reading_body = False
        self.transport.close()
        self._record(reason)

    def _record(self, reason: ClosureReason) -> None:
        closures = self.app_state.get(CONNECTION_CLOSURES)
        if not isinstance(closures, ConnectionClosures):
            closures = _UNREGISTERED
        closures.record(reason)

    def _plain_answer(self, status: int, text: bytes) -> bytes:
        """A plain-text answer that closes the connection, as uvicorn's own 400 is."""
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(text),
            b"connection: close\r\n\r\n",
            text,
        ]
        return b"".join(head)


# Closures of a server whose app does not publish its own (tests, tools): logged only.
_UNREGISTERED = ConnectionClosures(ConnectionMetrics(CollectorRegistry()))
