"""Publishing against the real RabbitMQ: properties, topology, confirms and routing."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import aio_pika
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from activity_contract.events import QUEUE_MESSAGE, ActivityGroupMessage, ActivityMessage
from activity_contract.topology import ACTIVITY_QUEUE, DEAD_LETTER_QUEUE
from activity_testing.events import event_payload
from activity_testing.rabbitmq import allow_declaring, delete_queue, rabbitmqctl
from activity_testing.waiting import wait_until
from ingest import queues
from ingest.app import create_app
from ingest.settings import IngestSettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def app(settings_for: Callable[..., IngestSettings]) -> AsyncIterator[FastAPI]:
    app = create_app(settings_for(rate_limit="1000/minute"))
    async with LifespanManager(app) as manager:
        yield manager.app  # type: ignore[misc]


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
        yield http


async def test_published_message_is_persistent_with_the_contract_properties(
    client: httpx.AsyncClient, rabbit_url: str
) -> None:
    response = await client.post(
        "/api/v1/activities", json=event_payload(), headers={"X-Request-ID": "trace-1"}
    )
    assert response.status_code == 202
    event_id = response.json()["event_id"]

    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(ACTIVITY_QUEUE, ensure=True)
        message = await queue.get(timeout=5)
        assert message is not None
        await message.ack()
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == event_id
    assert message.correlation_id == "trace-1"
    assert message.content_type == "application/json"
    assert str(ActivityMessage.model_validate_json(message.body).event_id) == event_id


async def test_start_up_declares_durable_quorum_queue_and_dead_letter_queue(
    app: FastAPI, rabbit_url: str
) -> None:
    vhost = rabbit_url.rsplit("/", 1)[1]
    output = rabbitmqctl(
        "list_queues", "-p", vhost, "name", "durable", "arguments", "--no-table-headers", "--quiet"
    )
    rows = {line.split("\t")[0]: line for line in output.splitlines() if line}
    assert set(rows) == {ACTIVITY_QUEUE, DEAD_LETTER_QUEUE}
    main = rows[ACTIVITY_QUEUE]
    assert "\ttrue\t" in main
    assert "quorum" in main
    assert "x-delivery-limit" in main
    assert DEAD_LETTER_QUEUE in main


async def test_unroutable_event_is_503_not_202(client: httpx.AsyncClient, rabbit_url: str) -> None:
    vhost = rabbit_url.rsplit("/", 1)[1]
    rabbitmqctl("delete_queue", "-p", vhost, ACTIVITY_QUEUE)
    response = await client.post("/api/v1/activities", json=event_payload())
    assert response.status_code == 503
    assert response.json()["error"] == "broker_unavailable"
    assert response.headers["Retry-After"].isdigit()


async def _queued_event_ids(rabbit_url: str) -> list[str]:
    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(ACTIVITY_QUEUE, passive=True)
        ids = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            body = QUEUE_MESSAGE.validate_json(message.body)
            events = body.events if isinstance(body, ActivityGroupMessage) else [body]
            assert all(isinstance(event, ActivityMessage) for event in events), events
            ids += [str(event.event_id) for event in events if isinstance(event, ActivityMessage)]
        return ids


async def test_readiness_right_after_a_publish_found_the_queue_missing_says_missing(
    client: httpx.AsyncClient, rabbit_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Probes share one look-up for QUEUE_CHECK_SECONDS; held long here, so the look-up made
    # before the deletion is still fresh when the publish finds the queue gone.
    monkeypatch.setattr(queues, "QUEUE_CHECK_SECONDS", 3600.0)
    assert (await client.get("/health/ready")).json()["checks"]["queue"] == "up"
    await asyncio.to_thread(allow_declaring, rabbit_url, False)
    try:
        await asyncio.to_thread(delete_queue, rabbit_url, ACTIVITY_QUEUE)
        refused = await client.post("/api/v1/activities", json=event_payload())
        assert refused.status_code == 503, refused.text
        ready = await client.get("/health/ready")
        assert ready.json()["checks"]["queue"] == "missing", ready.text
        assert ready.status_code == 503
    finally:
        await asyncio.to_thread(allow_declaring, rabbit_url, True)
    monkeypatch.undo()

    async def is_ready() -> bool:
        return (await client.get("/health/ready")).status_code == 200

    assert await wait_until(is_ready, 30), "the queue was never declared again"


async def test_a_deleted_queue_is_a_503_and_unready_until_declared_again(
    client: httpx.AsyncClient, rabbit_url: str
) -> None:
    # Until the test allows it, the queue cannot be declared again: the gap stays open.
    await asyncio.to_thread(allow_declaring, rabbit_url, False)
    try:
        await asyncio.to_thread(delete_queue, rabbit_url, ACTIVITY_QUEUE)
        events = [event_payload(event_id=str(uuid.uuid4())), event_payload()]
        refused = await client.post("/api/v1/activities/batch", json={"events": events})
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "broker_unavailable"
        ids = refused.json()["event_ids"]
        assert len(ids) == 2
        assert ids[0] == events[0]["event_id"]

        ready = await client.get("/health/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "unavailable"
        assert ready.json()["checks"]["broker"] == "up"
        assert ready.json()["checks"]["queue"] == "missing"
    finally:
        await asyncio.to_thread(allow_declaring, rabbit_url, True)

    async def is_ready() -> bool:  # probes alone bring the queue back
        return (await client.get("/health/ready")).status_code == 200

    assert await wait_until(is_ready, 30), "the queue was never declared again"
    retry = [{**event, "event_id": id_} for event, id_ in zip(events, ids, strict=True)]
    accepted = await client.post("/api/v1/activities/batch", json={"events": retry})
    assert accepted.status_code == 202, accepted.text
    assert sorted(await _queued_event_ids(rabbit_url)) == sorted(ids)
