"""Ingest's queues kept declared: at start-up, and again when one goes missing.

An operator may delete a queue while the processor is stopped; nothing else declares it
then, and every publish would answer 503 until ingest restarts. Look-ups and declarations
made again use a short-lived channel of their own: a channel error (404 for a missing
queue, 403, 406) closes that channel only, never the one publishing.
"""

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal, cast

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, ChannelNotFoundEntity
from faststream.exceptions import IncorrectState
from faststream.rabbit import RabbitBroker, RabbitQueue

from activity_contract.topology import QueueDeclaration
from ingest.metrics import IngestMetrics

if TYPE_CHECKING:
    from faststream.rabbit.schemas.queue import ClassicQueueArgs

logger = logging.getLogger(__name__)

# What a publish, a look-up or a declaration raises when RabbitMQ is down, slow, refuses
# it, or returns a message as unroutable. During a reconnection aio-pika raises
# ChannelInvalidStateError, a RuntimeError and not an AMQPError; a returned (unroutable)
# message raises PublishError, an AMQPError.
BROKER_FAILURES = (
    TimeoutError,
    AMQPError,
    ChannelInvalidStateError,
    ConnectionError,
    IncorrectState,
)
# The queues are declared again at most this often, one declaration at a time.
REDECLARE_SECONDS = 1.0
# Readiness looks the queues up at most this often (probes meanwhile share the answer),
# each look-up bounded by QUEUE_CHECK_TIMEOUT_SECONDS.
QUEUE_CHECK_SECONDS = 1.0
QUEUE_CHECK_TIMEOUT_SECONDS = 1.0

QueueState = Literal["up", "missing", "unknown"]
FOUND_BY_READINESS = "readiness"


class QueueKeeper:
    """Declares ingest's queues, looks them up, and declares them again when one is missing."""

    def __init__(
        self,
        broker: RabbitBroker,
        declarations: Sequence[QueueDeclaration],
        metrics: IngestMetrics,
        timeout: float,
    ) -> None:
        """Keep `declarations` (dead-letter queue first) on `broker`, each try within `timeout`."""
        self._broker = broker
        self._declarations = tuple(declarations)
        self._metrics = metrics
        self._timeout = timeout
        self.queues = [
            RabbitQueue(
                queue.name, durable=True, arguments=cast("ClassicQueueArgs", queue.arguments)
            )
            for queue in self._declarations
        ]
        self._connection: AbstractRobustConnection | None = None
        self._stopping = False
        self._redeclaration: asyncio.Task[None] | None = None
        self._redeclared_at = -math.inf
        self._check: asyncio.Task[QueueState] | None = None
        self._checked_at = -math.inf

    @property
    def activity_queue(self) -> RabbitQueue:
        """The queue ingest publishes to (declared last: it names the dead-letter queue)."""
        return self.queues[-1]

    async def start(self) -> None:
        """Declare the queues on the started broker's channel.

        Declared through FastStream, so the robust channel declares them again by itself
        whenever it reconnects.
        """
        for queue in self.queues:
            await self._broker.declare_queue(queue)
        self._connection = await self._broker.connect()  # the one start() made

    async def stop(self) -> None:
        """Start nothing more; end a look-up or declaration under way."""
        self._stopping = True
        self._connection = None
        tasks = [task for task in (self._redeclaration, self._check) if task is not None]
        self._redeclaration = self._check = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def missing(self, queue: str, found_by: str) -> None:
        """`queue` was found missing: declare every queue again, soon and once at a time.

        At most once per REDECLARE_SECONDS, whatever the number of publishes that meet the
        gap; a failed declaration is tried again at the next publish or readiness probe.
        Found by a publish, it also makes the next probe look again: the look-up the probes
        share may predate the gap and still say "up".
        """
        loop = asyncio.get_running_loop()
        if self._stopping:
            return
        if found_by != FOUND_BY_READINESS:
            self._checked_at = -math.inf
        if self._redeclaration is not None and not self._redeclaration.done():
            return
        if loop.time() - self._redeclared_at < REDECLARE_SECONDS:
            return
        self._redeclared_at = loop.time()
        extra = {"queue": queue, "found_by": found_by}
        logger.warning("queue missing: declaring the queues again", extra=extra)
        self._redeclaration = loop.create_task(self._declare_again())

    async def state(self) -> QueueState:
        """Whether every queue exists (`unknown` when RabbitMQ does not say in time).

        A missing queue is declared again (`missing`): an instance that is not ready gets no
        requests from a load balancer, so no publish would meet the gap.
        """
        loop = asyncio.get_running_loop()
        check = self._check
        stale = loop.time() - self._checked_at >= QUEUE_CHECK_SECONDS
        if check is None or (check.done() and stale):
            self._checked_at = loop.time()
            check = self._check = loop.create_task(self._look_up())
        # Shielded: a probe that gives up does not end the look-up other probes await.
        return await asyncio.shield(check)

    async def _look_up(self) -> QueueState:
        try:
            async with asyncio.timeout(QUEUE_CHECK_TIMEOUT_SECONDS):
                missing = await self._first_missing_queue()
        except BROKER_FAILURES:
            return "unknown"
        except asyncio.CancelledError:  # by stop(): the probes awaiting it get an answer
            return "unknown"
        if missing is None:
            return "up"
        self.missing(missing, found_by=FOUND_BY_READINESS)
        return "missing"

    async def _first_missing_queue(self) -> str | None:
        async with self._side_channel() as channel:
            for queue in self._declarations:
                try:
                    await channel.declare_queue(queue.name, passive=True)
                except ChannelNotFoundEntity:  # closes the side channel: nothing else to ask
                    return queue.name
        return None

    async def _declare_again(self) -> None:
        try:
            async with asyncio.timeout(self._timeout), self._side_channel() as channel:
                for queue in self._declarations:  # the dead-letter queue first
                    await channel.declare_queue(queue.name, durable=True, arguments=queue.arguments)
        except BROKER_FAILURES as error:
            self._metrics.queue_redeclarations.labels(outcome="failed").inc()
            logger.warning(
                "declaring the queues again failed",
                extra={"queue": self.activity_queue.name, "error_type": type(error).__name__},
            )
            return
        self._metrics.queue_redeclarations.labels(outcome="declared").inc()
        self._checked_at = -math.inf  # the next probe looks again, not repeating "missing"
        logger.info("queues declared again", extra={"queue": self.activity_queue.name})

    @asynccontextmanager
    async def _side_channel(self) -> AsyncIterator[AbstractChannel]:
        """A channel of its own on the broker's connection, closed after use."""
        if self._connection is None:
            raise IncorrectState("the broker is not started")
        # A plain channel, not a robust one: nothing reopens it after a channel error.
        async with aio_pika.Channel(self._connection, publisher_confirms=False) as channel:
            yield channel
