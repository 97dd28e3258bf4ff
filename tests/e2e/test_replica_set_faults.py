"""A replica-set MONGODB_URL through a primary election (design §6, §10): nothing lost or doubled.

SecantusDB advertises itself as the primary of a one-member replica set (`secantus`); here it
runs with test commands so a `failCommand` fail point, limited to the services' `appName`, can
answer inserts as a stepped-down primary would (NotWritablePrimary) and drop connections. The
driver then forgets the primary until its next heartbeat, as during a real election: PyMongo's
one retry fails too, and the processor's own retries must carry the writes through. Only the
processor inserts, so the fail point is used up by it alone.
"""

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from activity_contract.topology import DEAD_LETTER_QUEUE
from activity_testing.processes import ServiceProcess, free_port, venv_script, wait_for_port

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

REPLICA_SET = "secantus"
APP_NAME = "event-tracker-under-test"


@pytest.fixture(scope="module")
def mongo_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SecantusDB of this module's own, with fail points, named by its replica set."""
    port = free_port()
    server = subprocess.Popen(
        [
            venv_script("secantusd-py"),
            *("--host", "127.0.0.1", "--port", str(port)),
            *("--storage-path", str(tmp_path_factory.mktemp("secantus-rs"))),
            *("--log-level", "WARNING", "--sync-on-commit", "--enable-test-commands"),
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port)
        yield f"mongodb://127.0.0.1:{port}/?replicaSet={REPLICA_SET}&appName={APP_NAME}"
    finally:
        server.terminate()
        server.wait(20)


async def fail_inserts(url: str, **data: Any) -> None:
    """Arm the `failCommand` fail point for the next `times` insert commands."""
    times = data.pop("times")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        await client.admin.command(
            {
                "configureFailPoint": "failCommand",
                "mode": {"times": times},
                "data": {"failCommands": ["insert"], "appName": APP_NAME, **data},
            }
        )
    finally:
        await client.close()


async def fail_point_used_up(url: str) -> bool:
    """Whether an insert under the services' appName passes now (no retry of its own)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        url, retryWrites=False, serverSelectionTimeoutMS=15_000
    )
    try:
        await client["fail_point_probe"]["probe"].insert_one({})
        return True
    except PyMongoError:
        return False
    finally:
        await client.drop_database("fail_point_probe")
        await client.close()


async def test_processor_writes_through_a_primary_election(
    processor: ServiceProcess,
    mongo_server_url: str,
    post_events: Any,
    retry_until_accepted: Any,
    queue_depth: Any,
    assert_stored_exactly_once: Any,
) -> None:
    processor.start()
    accepted: list[str] = []

    async def post(count: int) -> None:
        outcome = await post_events(count, concurrency=4)
        retried = await retry_until_accepted(outcome.refused)
        assert set(outcome.statuses) <= {202, 503}, outcome.statuses
        accepted.extend(outcome.accepted + retried.accepted)

    await post(100)
    # The primary steps down: inserts answer NotWritablePrimary (PyMongo's retry included),
    await fail_inserts(mongo_server_url, times=2, errorCode=10107)
    await post(200)
    # then its connections drop, as when it restarts.
    await fail_inserts(mongo_server_url, times=2, closeConnection=True)
    await post(200)

    stored = await assert_stored_exactly_once(accepted)
    assert len(stored) == 500
    assert await queue_depth(DEAD_LETTER_QUEUE) == 0
    assert await fail_point_used_up(mongo_server_url), "the processor never met the fail point"
