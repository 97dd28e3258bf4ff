"""Erasure (design §3.3a): stored events deleted, queued ones never stored, later ones kept."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
import pytest
from pymongo.asynchronous.collection import AsyncCollection

from activity_testing.events import event_payload
from activity_testing.processes import ServiceFactory, ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

Document = dict[str, Any]
ADMIN, READER, WRITER = "admin-key", "read-key", "ingest-key"
ERASED, OTHER = "erase-me", "keep-me"


@pytest.fixture
def keyed_ingest(ingest_with: ServiceFactory) -> Iterator[ServiceProcess]:
    keys = {"ADMIN_API_KEYS": ADMIN, "READ_API_KEYS": READER, "INGEST_API_KEYS": WRITER}
    with ingest_with({**keys, "LOG_LEVEL": "INFO"}) as service:
        yield service


@pytest.fixture
async def http(keyed_ingest: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=keyed_ingest.base_url, timeout=30) as client:
        yield client


async def post(http: httpx.AsyncClient, user_id: str, count: int) -> list[str]:
    responses = await asyncio.gather(
        *(
            http.post(
                "/api/v1/activities",
                json=event_payload(user_id=user_id),
                headers={"Authorization": f"Bearer {WRITER}"},
            )
            for _ in range(count)
        )
    )
    assert {response.status_code for response in responses} == {202}
    return [response.json()["event_id"] for response in responses]


async def erase(http: httpx.AsyncClient, key: str | None = ADMIN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return await http.delete(f"/api/v1/users/{ERASED}/activities", headers=headers)


async def stored_for(activities: AsyncCollection[Document], user_id: str) -> int:
    return await activities.count_documents({"user_id": user_id})


async def test_erasure_deletes_stored_events_and_queued_ones_are_never_stored(
    http: httpx.AsyncClient,
    processor: ServiceProcess,
    activities: AsyncCollection[Document],
    wait_until: Any,
    queue_depth: Any,
) -> None:
    processor.start()
    await post(http, ERASED, 5)
    assert await wait_until(lambda: _equals(stored_for(activities, ERASED), 5), within=60)

    processor.stop()  # what is posted now waits in the queue
    await post(http, ERASED, 7)
    kept = await post(http, OTHER, 4)
    assert await wait_until(lambda: _positive(queue_depth()), within=30)  # stats lag

    first = await erase(http)
    assert first.status_code == 200, first.text
    assert first.json()["user_id"] == ERASED
    assert first.json()["deleted"] == 5
    second = await erase(http)  # harmless, and answered the same way
    assert second.status_code == 200
    assert second.json()["deleted"] == 0

    processor.start()
    assert await wait_until(lambda: _is_zero(queue_depth()), within=60)
    assert await stored_for(activities, ERASED) == 0
    stored_kept = [str(d["_id"]) async for d in activities.find({"user_id": OTHER})]
    assert sorted(stored_kept) == sorted(kept)

    later = await post(http, ERASED, 3)  # accepted after the erasure: stored as usual
    assert await wait_until(lambda: _equals(stored_for(activities, ERASED), 3), within=60)
    stored_later = [str(d["_id"]) async for d in activities.find({"user_id": ERASED})]
    assert sorted(stored_later) == sorted(later)

    ingest_metrics = (await http.get("/metrics")).text
    assert "event_tracker_ingest_erasures_total 2.0" in ingest_metrics
    assert "event_tracker_ingest_erased_events_total 5.0" in ingest_metrics
    processor_metrics = (await http.get(f"{processor.base_url}/metrics")).text
    assert "event_tracker_processor_events_erased_total 7.0" in processor_metrics


async def test_a_late_retry_timed_before_the_erasure_is_never_stored(
    http: httpx.AsyncClient,
    processor: ServiceProcess,
    activities: AsyncCollection[Document],
    wait_until: Any,
) -> None:
    """A client retrying late cannot bring erased data back; what happened after is kept."""
    processor.start()
    before = datetime.now(UTC) - timedelta(minutes=10)
    assert (await erase(http)).status_code == 200
    late = event_payload(user_id=ERASED, timestamp=before.isoformat(), event_id=str(uuid4()))
    after = event_payload(user_id=ERASED, event_id=str(uuid4()))
    for body in (late, after):
        answer = await http.post(
            "/api/v1/activities", json=body, headers={"Authorization": f"Bearer {WRITER}"}
        )
        assert answer.status_code == 202, answer.text
    assert await wait_until(lambda: _equals(stored_for(activities, ERASED), 1), within=60)
    stored = [str(d["_id"]) async for d in activities.find({"user_id": ERASED})]
    assert stored == [after["event_id"]]
    processor_metrics = (await http.get(f"{processor.base_url}/metrics")).text
    assert "event_tracker_processor_events_erased_total 1.0" in processor_metrics


async def test_erasure_refuses_ids_no_write_would_accept(
    http: httpx.AsyncClient, activities: AsyncCollection[Document]
) -> None:
    # One service for the five ids: each answer is on its own, nothing is kept between them.
    for user_id in ("%20", "%00", "a%0Ab", "%1B%5B31mred", "x" * 129):
        refused = await http.delete(
            f"/api/v1/users/{user_id}/activities", headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert refused.status_code == 422, (user_id, refused.text)
        assert refused.json()["error"] == "validation_error", user_id
        assert refused.json()["details"][0]["loc"] == ["path", "user_id"], user_id
    erasures = activities.database["erasures"]
    assert await erasures.count_documents({}) == 0


async def test_only_admin_keys_erase(http: httpx.AsyncClient) -> None:
    for key in (None, READER, WRITER, "wrong"):
        refused = await erase(http, key)
        assert refused.status_code == 401, key
        assert refused.json()["error"] == "unauthorized"
    assert (await erase(http)).status_code == 200
    schema = (await http.get("/openapi.json")).json()
    delete = schema["paths"]["/api/v1/users/{user_id}/activities"]["delete"]
    assert delete["security"] == [{"AdminKey": []}]
    assert schema["components"]["securitySchemes"]["AdminKey"]["scheme"] == "bearer"


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def _positive(value: Any) -> bool:
    return bool(await value > 0)


async def _is_zero(value: Any) -> bool:
    return bool(await value == 0)
