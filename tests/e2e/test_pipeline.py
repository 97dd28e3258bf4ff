"""POST → RabbitMQ → processor → MongoDB, with real processes and real services."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.collection import AsyncCollection

from activity_testing.events import event_payload
from activity_testing.processes import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

STORED_FIELDS = {
    "_id",
    "user_id",
    "event_type",
    "timestamp",
    "metadata",
    "received_at",
    "processed_at",
    "redelivered",
    "schema_version",
}


async def test_posted_event_is_stored_with_every_field(
    client: httpx.AsyncClient,
    processor: ServiceProcess,
    activities: AsyncCollection[dict[str, Any]],
    wait_for_count: Any,
) -> None:
    processor.start()
    event_id = uuid.uuid4()
    happened = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    before = datetime.now(UTC)
    response = await client.post(
        "/api/v1/activities",
        json=event_payload(
            event_id=str(event_id),
            user_id="  alice  ",
            event_type="cart:add",
            timestamp="2026-01-02T05:04:05.678+02:00",
            metadata={"sku": "A-1", "qty": 2, "tags": ["x", {"y": None}]},
        ),
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"event_id": str(event_id), "status": "accepted"}

    assert await wait_for_count(1) == 1
    stored = await activities.find_one({"_id": event_id})
    assert stored is not None
    assert set(stored) == STORED_FIELDS
    assert stored["user_id"] == "alice"
    assert stored["event_type"] == "cart:add"
    assert stored["timestamp"] == happened
    assert stored["metadata"] == {"sku": "A-1", "qty": 2, "tags": ["x", {"y": None}]}
    assert before - timedelta(seconds=1) <= stored["received_at"] <= stored["processed_at"]
    assert stored["redelivered"] is False
    assert stored["schema_version"] == 1
    assert stored["timestamp"].utcoffset() == timedelta(0)


async def test_batch_is_stored_in_full_and_ids_come_back_in_order(
    client: httpx.AsyncClient, processor: ServiceProcess, wait_for_count: Any
) -> None:
    processor.start()
    events = [event_payload(user_id=f"user-{i}") for i in range(50)]
    response = await client.post("/api/v1/activities/batch", json={"events": events})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 50
    assert len(set(body["event_ids"])) == 50
    assert await wait_for_count(50) == 50


async def test_same_event_id_posted_many_times_is_stored_once(
    client: httpx.AsyncClient,
    processor: ServiceProcess,
    activities: AsyncCollection[dict[str, Any]],
    wait_for_count: Any,
    wait_until: Any,
    queue_depth: Any,
) -> None:
    processor.start()
    single = str(uuid.uuid4())
    batched = [str(uuid.uuid4()) for _ in range(3)]
    posts = [
        client.post("/api/v1/activities", json=event_payload(event_id=single)) for _ in range(5)
    ]
    batch = {"events": [event_payload(event_id=event_id) for event_id in batched * 2]}
    posts += [client.post("/api/v1/activities/batch", json=batch) for _ in range(3)]
    responses = await asyncio.gather(*posts)
    assert all(response.status_code == 202 for response in responses)

    assert await wait_for_count(4) == 4
    # Every message was handled (none left to store a late copy), and the processor saw
    # each extra copy as a duplicate: 4 of the single, 3 x 6 - 3 of the batches.
    assert await wait_until(lambda: _is_zero(queue_depth()), within=60)
    async with httpx.AsyncClient(base_url=processor.base_url) as http:
        metrics = (await http.get("/metrics")).text
    assert "event_tracker_processor_events_duplicate_total 19.0" in metrics
    stored_ids = {str(doc["_id"]) async for doc in activities.find({}, {"_id": 1})}
    assert stored_ids == {single, *batched}
    assert await activities.count_documents({}) == 4


async def test_events_accepted_while_processor_is_down_are_stored_when_it_starts(
    client: httpx.AsyncClient, processor: ServiceProcess, wait_for_count: Any
) -> None:
    # The processor has never run: only ingest has declared the queue.
    responses = await asyncio.gather(
        *(client.post("/api/v1/activities", json=event_payload()) for _ in range(20))
    )
    assert [response.status_code for response in responses] == [202] * 20
    assert await wait_for_count(1, within=0) == 0  # nothing stores them yet

    await asyncio.to_thread(processor.start)
    assert await wait_for_count(20) == 20


async def test_processor_serves_health_and_the_asyncapi_docs(processor: ServiceProcess) -> None:
    processor.start()
    async with httpx.AsyncClient(base_url=processor.base_url) as http:
        assert (await http.get("/health/live")).status_code == 200
        ready = await http.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"broker": "up", "mongodb": "up", "consumer": "up"}
        docs = await http.get("/asyncapi")
        assert docs.status_code == 200
        assert "user_activities" in docs.text
        # The "try it" endpoint would publish to the real broker: it must not exist.
        try_it = await http.post("/asyncapi/try", json={"channelName": "user_activities"})
        assert try_it.status_code == 404


async def _is_zero(value: Any) -> bool:
    return bool(await value == 0)
