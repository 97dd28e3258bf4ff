"""The Python client against the real pipeline: every tracked event stored exactly once.

Faults: a broker outage (the async client), ingest killed and restarted (the sync client),
a rate limit far below the client's pace, and the client itself killed with a durable queue.
"""

import asyncio
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.collection import AsyncCollection

from activity_testing.processes import ServiceFactory, ServiceProcess
from activity_testing.rabbitmq import vhost_outage
from event_tracker_client import AsyncClient, Client, ClientConfig, Failure

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

Document = dict[str, Any]
CLIENT_PROCESS = Path(__file__).with_name("client_process.py")


def fast_config(base_url: str, **overrides: Any) -> ClientConfig:
    """Small batches sent often, short backoff: faults show within seconds."""
    settings: dict[str, Any] = {
        "batch_size": 20,
        "flush_interval": 0.05,
        "backoff_base": 0.2,
        "backoff_max": 2.0,
        "max_retry_seconds": 120,
        "shutdown_timeout": 60,
    }
    return ClientConfig(base_url=base_url, **{**settings, **overrides})


def track_many(client: Client | AsyncClient, count: int, ids: list[str], prefix: str) -> None:
    """Track `count` events; `posted_as` tells two stored copies of one event apart."""
    for n in range(count):
        ids.append(client.track(f"user-{n % 7}", "page_view", {"posted_as": f"{prefix}-{n}"}))


async def test_batches_are_stored_with_their_ids_and_clock_corrected_times(
    ingest: ServiceProcess,
    processor: ServiceProcess,
    activities: AsyncCollection[Document],
    assert_stored_exactly_once: Any,
) -> None:
    processor.start()
    happened = datetime.now(UTC) - timedelta(hours=1)
    failures: list[Failure] = []
    with Client(fast_config(ingest.base_url, batch_size=100), on_failure=failures.extend) as client:
        ids: list[str] = []
        track_many(client, 450, ids, "plain")
        timed = client.track("clock", "login", {"posted_as": "timed"}, timestamp=happened)
        assert await asyncio.to_thread(client.flush, 30)
    assert failures == []
    assert client.stats.delivered == 451
    assert client.stats.requests <= 10  # batched, not one request per event
    await assert_stored_exactly_once([*ids, timed])
    stored = await activities.find_one({"metadata.posted_as": "timed"})
    assert stored is not None
    assert str(stored["_id"]) == timed
    # The client sent `sent_at`, so the server kept its own time as the original.
    assert abs(stored["original_timestamp"] - happened) < timedelta(milliseconds=2)


async def test_async_client_rides_out_a_broker_outage(
    ingest: ServiceProcess,
    processor: ServiceProcess,
    rabbit_url: str,
    wait_until: Any,
    assert_stored_exactly_once: Any,
) -> None:
    processor.start()
    ids: list[str] = []
    async with AsyncClient(fast_config(ingest.base_url)) as client:

        async def produce() -> None:
            for round_ in range(100):
                track_many(client, 15, ids, f"broker-{round_}")
                await asyncio.sleep(0.02)  # pacing: an app tracking as it goes, not a wait

        producing = asyncio.create_task(produce())
        assert await wait_until(lambda: client.stats.delivered >= 200, within=30)
        with vhost_outage(rabbit_url):
            assert await wait_until(lambda: client.stats.unavailable >= 1, within=30)
        await producing
        async with asyncio.timeout(120):
            await client.flush()
    assert client.stats.rejected == client.stats.dropped == 0, client.stats
    assert client.stats.delivered == len(ids) == 1500
    await assert_stored_exactly_once(ids)


async def test_sync_client_rides_out_an_ingest_restart(
    ingest: ServiceProcess,
    processor: ServiceProcess,
    wait_until: Any,
    assert_stored_exactly_once: Any,
) -> None:
    processor.start()
    ids: list[str] = []
    client = Client(fast_config(ingest.base_url))
    done = threading.Event()

    def produce() -> None:
        for round_ in range(100):
            track_many(client, 20, ids, f"ingest-{round_}")
            done.wait(0.02)

    producing = asyncio.create_task(asyncio.to_thread(produce))
    try:
        assert await wait_until(lambda: client.stats.delivered >= 200, within=30)
        await asyncio.to_thread(ingest.stop, signal.SIGKILL)  # batches in flight included
        assert await wait_until(lambda: client.stats.no_answer >= 1, within=30)
        await asyncio.to_thread(ingest.start)
        await producing
        assert await asyncio.to_thread(client.flush, 120)
    finally:
        done.set()
        await asyncio.to_thread(client.close)
    assert client.stats.rejected == client.stats.dropped == 0, client.stats
    assert client.stats.delivered == len(ids) == 2000
    await assert_stored_exactly_once(ids)


async def test_a_429_storm_is_ridden_out(
    ingest_with: ServiceFactory,
    processor: ServiceProcess,
    assert_stored_exactly_once: Any,
) -> None:
    processor.start()
    ids: list[str] = []
    with (
        ingest_with({"RATE_LIMIT": "3/second"}) as ingest,
        Client(fast_config(ingest.base_url, batch_size=10)) as client,
    ):
        track_many(client, 300, ids, "storm")  # 30 requests at once: ten times the limit
        assert await asyncio.to_thread(client.flush, 120)
    assert client.stats.rate_limited >= 3, client.stats  # the storm hit; it waited Retry-After
    assert client.stats.rejected == client.stats.dropped == 0, client.stats
    await assert_stored_exactly_once(ids)


def queued_in(queue_file: Path) -> int:
    with sqlite3.connect(queue_file) as db:
        count: int = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    return count


async def test_durable_queue_survives_kill_9_of_the_client(
    ingest: ServiceProcess,
    processor: ServiceProcess,
    tmp_path: Path,
    assert_stored_exactly_once: Any,
) -> None:
    """Killed while a batch it already tried waits for its retry: nothing is lost."""
    processor.start()
    queue_file, ids_file = tmp_path / "queue.db", tmp_path / "ids.txt"
    command = [sys.executable, str(CLIENT_PROCESS), "durable", ingest.base_url, str(ids_file)]
    await asyncio.to_thread(ingest.stop, signal.SIGKILL)
    child = await asyncio.create_subprocess_exec(
        *command, "3000", str(queue_file), stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        async with asyncio.timeout(60):
            assert await child.stdout.readline() == b"tracked\n"
            assert await child.stdout.readline() == b"no answer\n"
    finally:
        child.kill()
        await child.wait()
    assert queued_in(queue_file) == 3000  # the batch in hand too

    await asyncio.to_thread(ingest.start)
    resumed = await asyncio.create_subprocess_exec(
        *command, "0", str(queue_file), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    async with asyncio.timeout(180):
        out, err = await resumed.communicate()
    assert out == b"resumed 0\n", err.decode()[-2000:]
    ids = ids_file.read_text().split()
    assert len(ids) == 3000
    await assert_stored_exactly_once(ids)


@pytest.mark.parametrize("mode", ["exit-sync", "exit-async"])
async def test_events_still_queued_at_interpreter_exit_are_sent(
    mode: str,
    ingest: ServiceProcess,
    processor: ServiceProcess,
    tmp_path: Path,
    assert_stored_exactly_once: Any,
) -> None:
    """The process tracks 95 events (batches of 10, a minute's flush interval) and returns."""
    processor.start()
    ids_file = tmp_path / "ids.txt"
    command = [sys.executable, str(CLIENT_PROCESS), mode, ingest.base_url, str(ids_file), "95"]
    child = await asyncio.create_subprocess_exec(*command, stderr=subprocess.PIPE)
    async with asyncio.timeout(120):
        _, err = await child.communicate()
    assert child.returncode == 0, err.decode()[-2000:]
    ids = ids_file.read_text().split()
    assert len(ids) == 95
    await assert_stored_exactly_once(ids)
