"""The whole pipeline as real processes: ingest and processor against real services."""

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from activity_contract.topology import ACTIVITY_QUEUE
from activity_testing.events import PostOutcome, event_payload
from activity_testing.processes import TEST_REDIS_URL, ServiceFactory, ServiceProcess, free_port
from activity_testing.rabbitmq import queue_depths
from activity_testing.waiting import wait_until as wait_until_holds

Document = dict[str, Any]
WaitForCount = Callable[..., Awaitable[int]]
WaitUntil = Callable[..., Awaitable[bool]]
QueueDepth = Callable[..., Awaitable[int]]
StoredCheck = Callable[..., Awaitable[list[str]]]


@pytest.fixture
def stack_env(
    rabbit_url: str, mongo_server_url: str, mongo_database: str, redis_key_prefix: str
) -> dict[str, str]:
    """Environment for both services: this test's vhost, database, Redis keys, free ports.

    The rate limit is lifted far above what a test posts from 127.0.0.1.
    """
    return {
        "RABBITMQ_URL": rabbit_url,
        "REDIS_URL": TEST_REDIS_URL,
        "RATE_LIMIT": "1000000/minute",
        "READ_RATE_LIMIT": "1000000/minute",
        "RATE_LIMIT_KEY_PREFIX": redis_key_prefix,
        "MONGODB_URL": mongo_server_url,
        "MONGODB_DATABASE": mongo_database,
        "INGEST_PORT": str(free_port()),
        "PROCESSOR_PORT": str(free_port()),
        "INGEST_HOST": "127.0.0.1",
        "PROCESSOR_HOST": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def ingest_with(stack_env: dict[str, str]) -> ServiceFactory:
    """An ingest process, not started: this test's stack with `env` on top (keys, URLs)."""

    def make(env: Mapping[str, str] | None = None, **options: Any) -> ServiceProcess:
        merged = {**stack_env, **(env or {})}
        return ServiceProcess("ingest", merged, int(merged["INGEST_PORT"]), **options)

    return make


@pytest.fixture
def ingest(ingest_with: ServiceFactory) -> Iterator[ServiceProcess]:
    """The ingest service, started."""
    with ingest_with() as service:
        yield service


@pytest.fixture
def processor(stack_env: dict[str, str]) -> Iterator[ServiceProcess]:
    """The processor service, not started: the test decides when (`start()`)."""
    service = ServiceProcess("processor", stack_env, int(stack_env["PROCESSOR_PORT"]))
    yield service
    service.stop()


@pytest.fixture
async def client(ingest: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the running ingest service."""
    async with httpx.AsyncClient(base_url=ingest.base_url, timeout=30) as http:
        yield http


@pytest.fixture
async def activities(
    mongo_server_url: str, mongo_database: str
) -> AsyncIterator[AsyncCollection[Document]]:
    """The `activities` collection of this test's database."""
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(
        mongo_server_url, tz_aware=True, uuidRepresentation="standard"
    )
    yield mongo[mongo_database]["activities"]
    await mongo.close()


@pytest.fixture
def wait_for_count(activities: AsyncCollection[Document]) -> WaitForCount:
    """Wait until the collection holds `expected` documents or `within` s pass; return the count."""

    async def wait(expected: int, within: float = 60.0) -> int:
        async def reached() -> bool:
            return await activities.count_documents({}) >= expected

        await wait_until_holds(reached, within)
        return await activities.count_documents({})

    return wait


PostEvents = Callable[..., Coroutine[Any, Any, PostOutcome]]
StartPosting = Callable[..., Awaitable[tuple["asyncio.Task[PostOutcome]", PostOutcome]]]


@pytest.fixture
def post_events(client: httpx.AsyncClient) -> PostEvents:
    """Post events one request each, `concurrency` at a time, with ids chosen here.

    Call as `await post_events(count)` or `await post_events(ids=[...])` (to retry ids);
    every answer other than 202 and 503 is recorded in `statuses` for the test to judge.
    Pass `outcome` to watch progress while the posting runs in a task.
    """

    async def post(
        count: int = 0,
        *,
        ids: Sequence[str] = (),
        concurrency: int = 8,
        outcome: PostOutcome | None = None,
    ) -> PostOutcome:
        outcome = outcome if outcome is not None else PostOutcome()
        todo = iter(list(ids) or [str(uuid.uuid4()) for _ in range(count)])

        async def worker() -> None:
            for event_id in todo:
                # `posted_as` repeats in every stored copy of one event, unlike `_id`.
                body = event_payload(
                    event_id=event_id,
                    user_id=f"user-{event_id[:4]}",
                    metadata={"posted_as": event_id},
                )
                try:
                    response = await client.post("/api/v1/activities", json=body)
                except httpx.TransportError:
                    outcome.statuses[0] += 1
                    continue
                outcome.statuses[response.status_code] += 1
                if response.status_code == 202:
                    outcome.accepted.append(event_id)
                elif response.status_code == 503:
                    assert response.json()["error"] == "broker_unavailable"
                    assert response.headers["Retry-After"].isdigit()
                    outcome.refused.append(event_id)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return outcome

    return post


@pytest.fixture
def retry_until_accepted(post_events: PostEvents) -> Callable[..., Awaitable[PostOutcome]]:
    """Re-post refused ids (same event ids), a second apart, as a client would; bounded."""

    async def retry(ids: Sequence[str], within: float = 60.0) -> PostOutcome:
        total = PostOutcome()
        todo = list(ids)
        deadline = time.monotonic() + within
        while todo and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            outcome = await post_events(ids=todo)
            total.accepted += outcome.accepted
            total.statuses.update(outcome.statuses)
            todo = outcome.refused
        total.refused = todo
        return total

    return retry


@pytest.fixture
def wait_until() -> WaitUntil:
    """Poll a condition (sync or async) every 0.2 s until it holds or `within` s pass."""
    return wait_until_holds


@pytest.fixture
def posting_under_way(post_events: PostEvents, wait_until: WaitUntil) -> StartPosting:
    """Start posting `count` events in a task; return it and its live outcome once
    `accepted` of them have been answered 202 (the fault is then injected mid-stream)."""

    async def start(
        count: int, *, concurrency: int, accepted: int
    ) -> tuple[asyncio.Task[PostOutcome], PostOutcome]:
        progress = PostOutcome()
        posting = asyncio.create_task(post_events(count, concurrency=concurrency, outcome=progress))
        assert await wait_until(lambda: len(progress.accepted) >= accepted, within=60)
        return posting, progress

    return start


@pytest.fixture
def queue_depth(rabbit_url: str) -> QueueDepth:
    """Messages (ready + unacknowledged) in a queue of this test's vhost, read off-loop."""

    async def depth(queue: str = ACTIVITY_QUEUE, column: str = "messages") -> int:
        depths = await asyncio.to_thread(queue_depths, rabbit_url, column)
        return depths.get(queue, 0)

    return depth


@pytest.fixture
def assert_stored_exactly_once(
    activities: AsyncCollection[Document],
    wait_for_count: WaitForCount,
    wait_until: WaitUntil,
    queue_depth: QueueDepth,
) -> StoredCheck:
    """Assert every accepted id is stored exactly once and nothing else but `allowed` is.

    Waits until the activity queue is empty, so no late write can change the answer.
    """

    async def check(
        accepted: Collection[str], allowed: Collection[str] = (), within: float = 90.0
    ) -> list[str]:
        await wait_for_count(len(accepted), within)
        assert await wait_until(lambda: _is_zero(queue_depth()), within), "queue not drained"
        documents = [doc async for doc in activities.find({}, {"_id": 1, "metadata": 1})]
        stored = [str(doc["_id"]) for doc in documents]
        # `_id` is unique by construction; a second copy of one posted event would show
        # as a repeated `posted_as` (post_events puts it in every event it posts).
        posted_as = Counter(doc["metadata"].get("posted_as") for doc in documents)
        duplicates = [event_id for event_id, n in posted_as.items() if event_id and n > 1]
        assert not duplicates, f"stored more than once: {duplicates[:5]}"
        missing = set(accepted) - set(stored)
        assert not missing, f"{len(missing)} accepted events not stored, e.g. {sorted(missing)[:5]}"
        unexpected = set(stored) - set(accepted) - set(allowed)
        assert not unexpected, f"stored but never posted: {sorted(unexpected)[:5]}"
        return stored

    return check


async def _is_zero(depth: Awaitable[int]) -> bool:
    return await depth == 0


@pytest.fixture
def start_processor(stack_env: dict[str, str]) -> Iterator[Callable[..., ServiceProcess]]:
    """Start a processor with extra environment (`start_processor(PROCESSOR_BATCH_WAIT_MS=...)`).

    Every processor started here is stopped after the test.
    """
    started: list[ServiceProcess] = []

    def start(**env: str) -> ServiceProcess:
        service = ServiceProcess(
            "processor", {**stack_env, **env}, int(env.get("PROCESSOR_PORT", free_port()))
        )
        service.env["PROCESSOR_PORT"] = str(service.port)
        started.append(service)
        return service.start()

    yield start
    for service in started:
        service.stop()
