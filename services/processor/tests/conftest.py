"""Fixtures the processor's tests share: the database; the subscriber on FastStream's
in-memory broker, with how it settled each message and what it dead-lettered."""

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from faststream import BaseMiddleware, StreamMessage
from faststream.message import AckStatus
from faststream.rabbit import RabbitBroker
from faststream.rabbit.annotations import RabbitMessage
from faststream.rabbit.message import RabbitMessage as RabbitStreamMessage
from faststream.rabbit.testing import TestRabbitBroker
from prometheus_client import CollectorRegistry
from pymongo.asynchronous.database import AsyncDatabase

from activity_contract.events import ActivityIn, ActivityMessage
from activity_contract.topology import ACTIVITY_QUEUE, DEAD_LETTER_QUEUE
from activity_contract.tracking_plan import TrackingPlan
from activity_testing.events import event_payload
from processor.app import build_processor
from processor.documents import init_documents, mongo_client
from processor.metrics import ProcessorMetrics
from processor.settings import ProcessorSettings


@pytest.fixture
async def database(
    mongo_server_url: str, mongo_database: str
) -> AsyncIterator[AsyncDatabase[dict[str, object]]]:
    """The test's own database on the MongoDB-compatible server, with the indexes made."""
    client = mongo_client(mongo_server_url)
    yield await init_documents(client, mongo_database)
    await client.close()


@dataclass
class Outcomes:
    """How each consumed message was settled, and what reached the dead-letter queue."""

    consumed: list[StreamMessage[Any]] = field(default_factory=list)
    requeue: list[bool] = field(default_factory=list)  # each reject's requeue flag
    dead_letters: list[RabbitMessage] = field(default_factory=list)

    @property
    def settled(self) -> list[AckStatus | None]:
        return [message.committed for message in self.consumed]

    def reasons(self) -> list[str]:
        return [m.headers["x-dead-letter-reason"] for m in self.dead_letters]


@pytest.fixture
def metrics() -> ProcessorMetrics:
    return ProcessorMetrics(CollectorRegistry())


@pytest.fixture
def plan() -> TrackingPlan | None:
    """No tracking plan (test_plan_checks gives one)."""
    return None


@pytest.fixture
async def outcomes_and_broker(
    database: AsyncDatabase[dict[str, object]],
    metrics: ProcessorMetrics,
    plan: TrackingPlan | None,
) -> AsyncIterator[tuple[Outcomes, RabbitBroker]]:
    settings = ProcessorSettings.model_construct(processor_batch_wait_ms=5)
    broker, _, _ = build_processor(settings, database, metrics, plan=plan)
    outcomes = Outcomes()

    class RecordSettlement(BaseMiddleware):
        async def consume_scope(
            self,
            call_next: Callable[[StreamMessage[Any]], Awaitable[Any]],
            msg: StreamMessage[Any],
        ) -> Any:
            if msg.raw_message.routing_key == ACTIVITY_QUEUE:
                outcomes.consumed.append(msg)
                reject = cast("RabbitStreamMessage", msg).reject

                async def record_reject(requeue: bool = False) -> None:
                    outcomes.requeue.append(requeue)
                    await reject(requeue=requeue)

                msg.reject = record_reject  # type: ignore[method-assign]
            return await call_next(msg)

    broker.insert_middleware(RecordSettlement)

    async def as_it_came(message: StreamMessage[Any]) -> bytes:
        return message.body  # dead letters need not be JSON

    @broker.subscriber(DEAD_LETTER_QUEUE, decoder=as_it_came)
    async def dead_letter(body: bytes, message: RabbitMessage) -> None:
        outcomes.dead_letters.append(message)

    async with TestRabbitBroker(broker) as test_broker:
        yield outcomes, test_broker


@pytest.fixture
def outcomes(outcomes_and_broker: tuple[Outcomes, RabbitBroker]) -> Outcomes:
    return outcomes_and_broker[0]


@pytest.fixture
def broker(outcomes_and_broker: tuple[Outcomes, RabbitBroker]) -> RabbitBroker:
    return outcomes_and_broker[1]


def event(**overrides: Any) -> ActivityMessage:
    received = datetime.now(UTC) - timedelta(seconds=2)
    return ActivityIn.model_validate(event_payload(**overrides)).to_message(received)


def value(metrics: ProcessorMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found
