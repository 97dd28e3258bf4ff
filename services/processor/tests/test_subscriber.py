"""The subscriber on FastStream's in-memory broker, writing to a real database."""

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from faststream import BaseMiddleware, StreamMessage
from faststream.message import AckStatus
from faststream.rabbit import RabbitBroker
from faststream.rabbit.testing import TestRabbitBroker
from pymongo.asynchronous.database import AsyncDatabase

from activity_contract.events import ActivityIn
from activity_contract.testing import event_payload
from activity_contract.topology import ACTIVITY_QUEUE
from processor.app import build_broker, bulk_writer
from processor.documents import Activity, init_documents, mongo_client
from processor.settings import ProcessorSettings

pytestmark = pytest.mark.integration


class Settled(list[AckStatus | None]):
    """How each consumed message was settled, in order."""


@pytest.fixture
async def database(
    mongo_server_url: str, mongo_database: str
) -> AsyncIterator[AsyncDatabase[dict[str, object]]]:
    client = mongo_client(mongo_server_url)
    yield await init_documents(client, mongo_database)
    await client.close()


@pytest.fixture
async def broker(database: AsyncDatabase[dict[str, object]]) -> AsyncIterator[RabbitBroker]:
    settings = ProcessorSettings.model_construct(processor_batch_wait_ms=5)
    broker = build_broker(settings, bulk_writer(settings))
    async with TestRabbitBroker(broker) as test_broker:
        yield test_broker


@pytest.fixture
def settled(broker: RabbitBroker) -> Settled:
    record = Settled()

    class RecordSettlement(BaseMiddleware):
        async def consume_scope(
            self,
            call_next: Callable[[StreamMessage[Any]], Awaitable[Any]],
            msg: StreamMessage[Any],
        ) -> Any:
            try:
                return await call_next(msg)
            finally:
                record.append(msg.committed)

    broker.insert_middleware(RecordSettlement)
    return record


def message_body(**overrides: Any) -> dict[str, Any]:
    event = ActivityIn.model_validate(event_payload(**overrides))
    return event.to_message(datetime.now(UTC)).model_dump(mode="json")


async def test_valid_message_is_stored_then_acked(broker: RabbitBroker, settled: Settled) -> None:
    body = message_body(metadata={"k": [1, 2]})
    await broker.publish(body, queue=ACTIVITY_QUEUE)
    stored = await Activity.get(UUID(body["event_id"]))
    assert stored is not None
    assert stored.user_id == body["user_id"]
    assert stored.metadata == {"k": [1, 2]}
    assert stored.redelivered is False
    assert stored.processed_at >= stored.received_at
    assert settled == [AckStatus.ACKED]


async def test_duplicate_is_acked_and_stored_once(broker: RabbitBroker, settled: Settled) -> None:
    body = message_body()
    for _ in range(3):
        await broker.publish(body, queue=ACTIVITY_QUEUE)
    assert await Activity.find(Activity.id == UUID(body["event_id"])).count() == 1
    assert settled == [AckStatus.ACKED] * 3


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        {"event_id": str(uuid4()), "user_id": "u"},
        {**message_body(), "schema_version": 2},
        {**message_body(), "event_type": "9 bad"},
    ],
    ids=["not-json", "empty-object", "missing-fields", "unknown-version", "bad-event-type"],
)
async def test_undecodable_or_invalid_message_is_rejected(
    broker: RabbitBroker, settled: Settled, body: object
) -> None:
    await broker.publish(body, queue=ACTIVITY_QUEUE)
    assert settled == [AckStatus.REJECTED]
    assert await Activity.count() == 0


async def test_processing_continues_after_a_poison_message(
    broker: RabbitBroker, settled: Settled
) -> None:
    await broker.publish(b"\x00garbage", queue=ACTIVITY_QUEUE)
    body = message_body()
    await broker.publish(body, queue=ACTIVITY_QUEUE)
    assert settled == [AckStatus.REJECTED, AckStatus.ACKED]
    assert await Activity.get(UUID(body["event_id"])) is not None
