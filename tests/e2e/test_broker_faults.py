"""RabbitMQ faults: unroutable messages and dropped connections (design §4, §6).

Connections are dropped only in this test's own virtual host; the shared node is never
stopped or restarted.
"""

import asyncio
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from activity_contract.topology import ACTIVITY_QUEUE
from activity_testing.events import event_payload
from activity_testing.processes import ServiceFactory, ServiceProcess
from activity_testing.rabbitmq import (
    StallingProxy,
    allow_declaring,
    close_vhost_connections,
    delete_queue,
    vhost_outage,
)
from ingest.http.errors import RETRY_AFTER_SECONDS

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


async def test_unroutable_event_answers_503_not_202(
    client: httpx.AsyncClient, rabbit_url: str
) -> None:
    assert (await client.post("/api/v1/activities", json=event_payload())).status_code == 202
    # Ingest declares a missing queue again at once: keep it from doing so here.
    await asyncio.to_thread(allow_declaring, rabbit_url, False)
    await asyncio.to_thread(delete_queue, rabbit_url, ACTIVITY_QUEUE)

    single = await client.post("/api/v1/activities", json=event_payload())
    batch = await client.post(
        "/api/v1/activities/batch", json={"events": [event_payload(), event_payload()]}
    )

    for response in (single, batch):
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "broker_unavailable"
        assert response.headers["Retry-After"].isdigit()


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Send one keep-alive GET /health/live on the connection; return its status line."""
    writer.write(b"GET /health/live HTTP/1.1\r\nHost: ingest\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return head.split(b"\r\n", 1)[0]


async def test_a_client_retrying_after_retry_after_finds_its_connection_open(
    ingest: ServiceProcess,
) -> None:
    """A client that waits a 503's Retry-After retries on the connection it had: ingest must
    not close it meanwhile, or the retry races the close and fails with no answer at all."""
    reader, writer = await asyncio.open_connection("127.0.0.1", ingest.port)
    try:
        assert (await _answer(reader, writer)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(RETRY_AFTER_SECONDS + 1)  # the idle time is what is tested
        try:
            status = await _answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            raise AssertionError(f"ingest closed an idle connection: {error!r}") from None
        assert status.startswith(b"HTTP/1.1 200"), status
    finally:
        writer.close()


async def test_connection_drop_while_posting_loses_and_duplicates_nothing(
    processor: ServiceProcess,
    rabbit_url: str,
    posting_under_way: Any,
    retry_until_accepted: Any,
    assert_stored_exactly_once: Any,
) -> None:
    processor.start()
    posting, _ = await posting_under_way(1000, concurrency=8, accepted=200)

    # Both services reconnect by themselves at once.
    await asyncio.to_thread(close_vhost_connections, rabbit_url)
    outcome = await posting
    assert set(outcome.statuses) <= {202, 503}, outcome.statuses

    # The client retries what got 503 with the same event ids.
    retried = await retry_until_accepted(outcome.refused)
    assert sorted(retried.accepted) == sorted(outcome.refused), retried.statuses
    stored = await assert_stored_exactly_once(outcome.accepted + retried.accepted)
    assert len(stored) == 1000


async def test_broker_outage_answers_503_and_both_services_recover(
    client: httpx.AsyncClient,
    processor: ServiceProcess,
    rabbit_url: str,
    post_events: Any,
    posting_under_way: Any,
    retry_until_accepted: Any,
    wait_until: Any,
    assert_stored_exactly_once: Any,
) -> None:
    processor.start()
    posting, progress = await posting_under_way(600, concurrency=4, accepted=100)

    with vhost_outage(rabbit_url):
        answered = sum(progress.statuses.values())
        assert await wait_until(lambda: sum(progress.statuses.values()) >= answered + 20, 30)
        assert (await client.get("/health/ready")).status_code == 503
        async with httpx.AsyncClient(base_url=processor.base_url) as http:
            assert (await http.get("/health/ready")).status_code == 503
    # Reconnected by itself, within its reconnect interval.
    assert await wait_until(lambda: _ready(client), within=60)
    outcome = await posting
    assert set(outcome.statuses) <= {202, 503}, outcome.statuses
    assert outcome.statuses[503] >= 20

    retried = await retry_until_accepted(outcome.refused)
    assert sorted(retried.accepted) == sorted(outcome.refused), retried.statuses
    after = await post_events(100)
    late = await retry_until_accepted(after.refused)  # readiness may lead the channel a bit
    assert len(after.accepted + late.accepted) == 100
    stored = await assert_stored_exactly_once(
        outcome.accepted + retried.accepted + after.accepted + late.accepted
    )
    assert len(stored) == 700


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/health/ready")).status_code == 200


async def test_unconfirmed_publish_answers_503_within_the_publish_timeout(
    rabbit_url: str, ingest_with: ServiceFactory
) -> None:
    # Ingest talks to RabbitMQ through a proxy that can stall: a hung broker, no errors.
    broker = urlsplit(rabbit_url)
    proxy = await StallingProxy(broker.hostname or "127.0.0.1", broker.port or 5672).start()
    via_proxy = urlunsplit(
        broker._replace(netloc=f"{broker.username}:{broker.password}@127.0.0.1:{proxy.port}")
    )
    ingest = ingest_with({"RABBITMQ_URL": via_proxy, "PUBLISH_TIMEOUT_SECONDS": "1"})
    await asyncio.to_thread(ingest.start)  # off the loop: the proxy runs on it
    try:
        async with httpx.AsyncClient(base_url=ingest.base_url, timeout=30) as http:
            assert (await http.post("/api/v1/activities", json=event_payload())).status_code == 202

            proxy.stall()
            started = time.monotonic()
            single = await http.post("/api/v1/activities", json=event_payload())
            elapsed = time.monotonic() - started
            batch = await http.post("/api/v1/activities/batch", json={"events": [event_payload()]})

            assert single.status_code == 503, single.text
            assert single.json()["error"] == "broker_unavailable"
            assert 0.9 <= elapsed < 4.0
            assert batch.status_code == 503, batch.text

            proxy.resume()
            assert (await http.post("/api/v1/activities", json=event_payload())).status_code == 202
    finally:
        await asyncio.to_thread(ingest.stop)
        await proxy.close()


async def _holds_one(depth: Awaitable[int]) -> bool:
    return await depth == 1


async def test_a_deleted_queue_is_declared_again_and_the_retry_is_accepted(
    client: httpx.AsyncClient, rabbit_url: str, wait_until: Any, queue_depth: Any
) -> None:
    """An operator deletes the queue while the processor is stopped: the publish that meets
    the gap is a 503; ingest declares its queues again by itself, without a restart."""
    await asyncio.to_thread(delete_queue, rabbit_url, ACTIVITY_QUEUE)
    events = [event_payload(event_id=str(uuid.uuid4())), event_payload()]
    refused = await client.post("/api/v1/activities/batch", json={"events": events})
    assert refused.status_code == 503, refused.text
    ids = refused.json()["event_ids"]
    assert len(ids) == 2
    assert ids[0] == events[0]["event_id"]

    retry = {"events": [{**event, "event_id": id_} for event, id_ in zip(events, ids, strict=True)]}

    async def accepted() -> bool:  # a client retrying the 503 with the ids it names
        return (await client.post("/api/v1/activities/batch", json=retry)).status_code == 202

    assert await wait_until(accepted, within=30), "ingest never declared the queue again"
    # The retry, as one message (the refused publish was returned, not queued).
    assert await wait_until(lambda: _holds_one(queue_depth()), within=30)


async def test_readiness_names_a_missing_queue_until_ingest_declares_it_again(
    ingest_with: ServiceFactory,
    rabbit_url: str,
    tmp_path: Path,
    wait_until: Any,
    queue_depth: Any,
) -> None:
    """While the queue cannot be declared again (the user may not configure queues for a
    while), readiness is 503 naming the queue; once it can, ingest declares it again even
    with no request arriving (a load balancer sends none to an instance that is not ready)."""
    log = tmp_path / "ingest.log"
    with ingest_with(stderr=log) as ingest:
        async with httpx.AsyncClient(base_url=ingest.base_url, timeout=30) as http:
            ready = await http.get("/health/ready")
            assert ready.status_code == 200
            assert ready.json()["checks"]["queue"] == "up"

            await asyncio.to_thread(allow_declaring, rabbit_url, False)
            try:
                await asyncio.to_thread(delete_queue, rabbit_url, ACTIVITY_QUEUE)
                events = [event_payload(event_id=str(uuid.uuid4())), event_payload()]
                refused = await http.post("/api/v1/activities/batch", json={"events": events})
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"] == "broker_unavailable"
                ids = refused.json()["event_ids"]
                assert len(ids) == 2
                assert ids[0] == events[0]["event_id"]

                ready = await http.get("/health/ready")
                assert ready.status_code == 503, ready.text
                assert ready.json()["status"] == "unavailable"
                assert ready.json()["checks"]["queue"] == "missing"
                assert ready.json()["checks"]["broker"] == "up"
            finally:
                await asyncio.to_thread(allow_declaring, rabbit_url, True)

            async def is_ready() -> bool:
                return (await http.get("/health/ready")).status_code == 200

            assert await wait_until(is_ready, within=30), "the queue was never declared again"
            retry = [{**event, "event_id": id_} for event, id_ in zip(events, ids, strict=True)]
            accepted = await http.post("/api/v1/activities/batch", json={"events": retry})
            assert accepted.status_code == 202, accepted.text
            assert await wait_until(lambda: _holds_one(queue_depth()), within=30)

            metrics = (await http.get("/metrics")).text
            assert 'event_tracker_ingest_queue_redeclarations_total{outcome="failed"}' in metrics
            assert 'event_tracker_ingest_queue_redeclarations_total{outcome="declared"}' in metrics

    lines = log.read_text().splitlines()
    missing = [line for line in lines if "WARNING" in line and f"queue={ACTIVITY_QUEUE}" in line]
    assert missing, "no warning names the missing queue"
