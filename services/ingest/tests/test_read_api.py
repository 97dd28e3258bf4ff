"""GET /api/v1/users/{user_id}/activities against SecantusDB (real RabbitMQ for the app)."""

import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from beanie.odm.queries.find import FindMany
from fastapi import FastAPI
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.cursor import AsyncCursor

from activity_contract.storage import (
    ACTIVITIES_COLLECTION,
    USER_TIMELINE_INDEX,
    USER_TIMELINE_KEYS,
)
from activity_testing.events import event_payload
from activity_testing.processes import SecantusServer
from ingest.reads import (
    READ_TIMEOUT_SECONDS,
    ActivityItem,
    ActivityQuery,
    ActivityReader,
    Position,
)

pytestmark = pytest.mark.integration

BuildApp = Callable[..., Awaitable[tuple[FastAPI, httpx.AsyncClient]]]
Collection = AsyncCollection[dict[str, Any]]
READ_KEYS = ["read-key-1", "read-key-2"]
AUTH = {"Authorization": f"Bearer {READ_KEYS[0]}"}
BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def stored(
    user_id: str = "alice", event_type: str = "page_view", timestamp: datetime = BASE
) -> dict[str, Any]:
    """A document as the processor stores it."""
    return {
        "_id": uuid.uuid4(),
        "user_id": user_id,
        "event_type": event_type,
        "timestamp": timestamp,
        "metadata": {"path": "/home"},
        "received_at": timestamp,
        "processed_at": timestamp + timedelta(milliseconds=5),
        "redelivered": False,
        "schema_version": 1,
    }


def url(user_id: str = "alice") -> str:
    return f"/api/v1/users/{user_id}/activities"


@pytest.fixture
async def reader_client(
    build_app: BuildApp, mongo_server_url: str, mongo_database: str
) -> httpx.AsyncClient:
    _, client = await build_app(
        mongodb_url=mongo_server_url, mongodb_database=mongo_database, read_api_keys=READ_KEYS
    )
    return client


async def all_pages(
    client: httpx.AsyncClient, params: dict[str, Any]
) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Follow next_cursor to the end; return the ids per page and every item."""
    pages: list[list[str]] = []
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        page_params = {**params, "cursor": cursor} if cursor else params
        response = await client.get(url(), params=page_params, headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item["event_id"] for item in body["items"]])
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages, items
    raise AssertionError("pagination never ended")


async def test_equal_timestamps_page_without_skip_or_repeat(
    reader_client: httpx.AsyncClient, activities: Collection
) -> None:
    documents = [stored() for _ in range(25)]
    await activities.insert_many(documents)
    await activities.insert_many([stored(user_id="bob") for _ in range(3)])

    pages, items = await all_pages(reader_client, {"limit": 7})

    assert [len(page) for page in pages] == [7, 7, 7, 4]
    ids = [item["event_id"] for item in items]
    assert sorted(ids) == sorted(str(document["_id"]) for document in documents)
    assert len(set(ids)) == 25
    # Ties are broken by event id, descending, like the index.
    assert ids == [
        str(i) for i in sorted((document["_id"] for document in documents), reverse=True)
    ]


async def test_items_are_newest_first_with_every_field(
    reader_client: httpx.AsyncClient, activities: Collection
) -> None:
    documents = [stored(timestamp=BASE + timedelta(minutes=i)) for i in range(5)]
    await activities.insert_many(documents)

    response = await reader_client.get(url(), headers=AUTH)

    assert response.status_code == 200
    body = response.json()
    assert body["next_cursor"] is None
    newest = documents[-1]
    assert body["items"][0] == {
        "event_id": str(newest["_id"]),
        "user_id": "alice",
        "event_type": "page_view",
        "timestamp": "2026-03-01T12:04:00Z",
        "original_timestamp": None,
        "metadata": {"path": "/home"},
        "received_at": "2026-03-01T12:04:00Z",
        "processed_at": "2026-03-01T12:04:00.005000Z",
    }
    assert [item["timestamp"][11:16] for item in body["items"]] == [
        "12:04",
        "12:03",
        "12:02",
        "12:01",
        "12:00",
    ]


async def test_filters_by_event_type_since_and_until(
    reader_client: httpx.AsyncClient, activities: Collection
) -> None:
    await activities.insert_many(
        [
            stored(
                event_type="click" if i % 2 else "page_view", timestamp=BASE + timedelta(hours=i)
            )
            for i in range(10)
        ]
    )
    since = (BASE + timedelta(hours=2)).isoformat()
    # The same instant written with another offset: until is exclusive.
    until = (BASE + timedelta(hours=7)).astimezone(timezone(timedelta(hours=2))).isoformat()

    _, clicks = await all_pages(reader_client, {"event_type": "click", "limit": 2})
    assert [item["timestamp"][11:13] for item in clicks] == ["21", "19", "17", "15", "13"]
    assert {item["event_type"] for item in clicks} == {"click"}

    _, window = await all_pages(reader_client, {"since": since, "until": until, "limit": 2})
    assert [item["timestamp"][11:13] for item in window] == ["18", "17", "16", "15", "14"]

    _, both = await all_pages(
        reader_client, {"since": since, "until": until, "event_type": "page_view"}
    )
    assert [item["timestamp"][11:13] for item in both] == ["18", "16", "14"]


async def test_since_includes_the_events_exactly_at_it(
    reader_client: httpx.AsyncClient, activities: Collection
) -> None:
    """SecantusDB drops them from an index range `$gte` on the descending timestamp."""
    await activities.insert_many([stored(timestamp=BASE + timedelta(hours=i)) for i in range(4)])
    at_since = [stored(timestamp=BASE + timedelta(hours=2)) for _ in range(2)]
    await activities.insert_many(at_since)
    since = (BASE + timedelta(hours=2)).isoformat()

    response = await reader_client.get(url(), params={"since": since}, headers=AUTH)

    assert response.status_code == 200, response.text
    hours = [item["timestamp"][11:13] for item in response.json()["items"]]
    assert hours == ["15", "14", "14", "14"]


async def test_unknown_user_gets_an_empty_page(
    reader_client: httpx.AsyncClient, activities: Collection
) -> None:
    await activities.insert_one(stored())
    response = await reader_client.get(url("nobody"), headers=AUTH)
    assert response.json() == {"items": [], "next_cursor": None}


async def test_a_database_where_nothing_was_stored_yet_reads_empty_pages(
    reader_client: httpx.AsyncClient, mongo_server_url: str, mongo_database: str
) -> None:
    """Before the processor ever ran there is no collection and no index: still 200."""
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server_url)
    try:
        assert await mongo[mongo_database].list_collection_names() == []
    finally:
        await mongo.close()
    cursor = Position(BASE, uuid.uuid4()).encode()
    for params in (
        {},
        {"limit": 1},
        {"event_type": "click", "since": "2026-01-01T00:00:00Z", "until": "2026-12-31T00:00:00Z"},
        {"cursor": cursor},
        {"cursor": cursor, "since": "2026-01-01T00:00:00Z"},
    ):
        response = await reader_client.get(url(), params=params, headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    "user_id", ["team/alice", "a/activities", "/leading", "trailing/", "a//b", "x%2Fy"]
)
async def test_a_user_id_with_slashes_reads_its_own_events(
    reader_client: httpx.AsyncClient, activities: Collection, user_id: str
) -> None:
    """Servers decode `%2F` before routing: the route still takes the whole id."""
    mine = stored(user_id=user_id)
    others = {"team", "alice", "a", "activities", "leading", "trailing", "b", "x/y"} - {user_id}
    await activities.insert_many([mine, *(stored(user_id=other) for other in others)])

    response = await reader_client.get(url(quote(user_id, safe="")), headers=AUTH)

    assert response.status_code == 200, response.text
    assert [item["event_id"] for item in response.json()["items"]] == [str(mine["_id"])]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong-key"}, 401),
        ({"Authorization": f"Basic {READ_KEYS[0]}"}, 401),
        ({"Authorization": f"Bearer {READ_KEYS[0]}"}, 200),
        ({"Authorization": f"Bearer {READ_KEYS[1]}"}, 200),
    ],
)
async def test_read_api_requires_a_read_key(
    reader_client: httpx.AsyncClient,
    activities: Collection,
    headers: dict[str, str],
    status: int,
) -> None:
    response = await reader_client.get(url(), headers=headers)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.json()["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_no_configured_keys_refuses_every_read(
    build_app: BuildApp, mongo_server_url: str, mongo_database: str, activities: Collection
) -> None:
    _, client = await build_app(
        mongodb_url=mongo_server_url, mongodb_database=mongo_database, read_api_keys=[]
    )
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything"}):
        response = await client.get(url(), headers=headers)
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"since": "2026-03-01T12:00:00"}, "since"),
        ({"until": "yesterday"}, "until"),
        ({"since": "1772366400"}, "since"),  # Unix epoch numbers: RFC 3339 only
        ({"until": "1772366400.5"}, "until"),
        ({"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "until"),
        ({"event_type": "1-starts-with-a-digit"}, "event_type"),
    ],
)
async def test_bad_query_values_are_422(
    reader_client: httpx.AsyncClient, params: dict[str, Any], parameter: str
) -> None:
    response = await reader_client.get(url(), params=params, headers=AUTH)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert ["query", parameter] in [detail["loc"] for detail in body["details"]]


@pytest.mark.parametrize(
    ("query", "unknown"),
    [("limt=5", ["limt"]), ("=false", [""]), ("limit=5&page=2&x=1", ["page", "x"])],
)
async def test_unknown_query_parameters_are_422_naming_them(
    reader_client: httpx.AsyncClient, query: str, unknown: list[str]
) -> None:
    response = await reader_client.get(f"{url()}?{query}", headers=AUTH)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert [detail["loc"] for detail in body["details"]] == [["query", name] for name in unknown]


async def query_plan(query: FindMany[ActivityItem]) -> dict[str, Any]:
    """The server's plan for a Beanie query of the read path."""
    cursor = await query.get_cursor()
    assert isinstance(cursor, AsyncCursor)
    plan: dict[str, Any] = (await cursor.explain())["queryPlanner"]
    return plan


async def test_page_queries_are_served_by_the_user_timeline_index(
    activities: Collection, mongo_server_url: str, mongo_database: str
) -> None:
    await activities.insert_many([stored(event_type=f"t{i % 3}") for i in range(20)])
    reader = ActivityReader(mongo_server_url, mongo_database)
    try:
        first = await reader.page(ActivityQuery(user_id="alice", limit=5))
        assert first.next_cursor is not None
        after = Position.decode(first.next_cursor)
        since = BASE - timedelta(days=1)
        queries = [
            ActivityQuery(user_id="alice", limit=5),
            ActivityQuery(user_id="alice", limit=5, since=since, until=BASE + timedelta(days=1)),
            ActivityQuery(user_id="alice", limit=5, after=after),
            ActivityQuery(user_id="alice", limit=5, since=since, after=after),
        ]
        # Not with `event_type`: SecantusDB's explain reports a collection scan for
        # `{user_id, event_type, ...}`, although its executor serves that query from the
        # user's index range (its explain lacks the executor's per-field fallback).
        plans = [
            await query_plan(reader.find(query_filter, query.limit + 1))
            for query in queries
            for query_filter in query.filters()
        ]
    finally:
        await reader.close()
    assert len(plans) == 6
    for plan in plans:
        stages = []
        node = plan["winningPlan"]
        while node:
            stages.append((node.get("stage"), node.get("indexName")))
            node = node.get("inputStage")
        assert ("IXSCAN", USER_TIMELINE_INDEX) in stages, plan
        assert ("COLLSCAN", None) not in stages, plan


async def test_database_loss_is_a_quick_503_while_writes_go_on(
    build_app: BuildApp, tmp_path: Path
) -> None:
    with SecantusServer(tmp_path / "secantus") as server:
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            server.url, tz_aware=True, uuidRepresentation="standard"
        )
        collection = mongo["reads"][ACTIVITIES_COLLECTION]
        await collection.create_index(list(USER_TIMELINE_KEYS), name=USER_TIMELINE_INDEX)
        await collection.insert_one(stored())
        await mongo.close()
        _, client = await build_app(
            mongodb_url=server.url, mongodb_database="reads", read_api_keys=READ_KEYS
        )
        assert (await client.get(url(), headers=AUTH)).status_code == 200
        ready = await client.get("/health/ready")
        assert ready.json()["checks"]["mongodb"] == "up"

        server.stop()

        started = time.monotonic()
        response = await client.get(url(), headers=AUTH)
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "database_unavailable"
        assert response.headers["Retry-After"] == "5"
        assert elapsed < 15  # bounded by the 2 s server selection timeout, with slack

        accepted = await client.post("/api/v1/activities", json=event_payload())
        assert accepted.status_code == 202, accepted.text
        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "checks": {"broker": "up", "queue": "up", "redis": "up", "mongodb": "down"},
        }


async def test_a_read_over_its_time_budget_is_a_503_and_the_server_is_told_the_budget(
    build_app: BuildApp, tmp_path: Path
) -> None:
    with SecantusServer(tmp_path / "secantus", test_commands=True) as server:
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            server.url, tz_aware=True, uuidRepresentation="standard"
        )
        collection = mongo["reads"][ACTIVITIES_COLLECTION]
        await collection.create_index(list(USER_TIMELINE_KEYS), name=USER_TIMELINE_INDEX)
        await collection.insert_one(stored())
        _, client = await build_app(
            mongodb_url=server.url, mongodb_database="reads", read_api_keys=READ_KEYS
        )
        assert (await client.get(url(), headers=AUTH)).status_code == 200

        # mongod's failpoint: every operation that carries a time limit (`maxTimeMS`)
        # expires on the server, and only those. So the read hands the server its budget.
        await mongo.admin.command(
            {"configureFailPoint": "maxTimeAlwaysTimeOut", "mode": "alwaysOn"}
        )
        try:
            response = await client.get(url(), headers=AUTH)
        finally:
            await mongo.admin.command({"configureFailPoint": "maxTimeAlwaysTimeOut", "mode": "off"})
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "database_unavailable"

        # A server that answers after twice the budget: the read gives up at the budget.
        await mongo.admin.command(
            {
                "configureFailPoint": "failCommand",
                "mode": "alwaysOn",
                "data": {
                    "failCommands": ["find"],
                    "blockConnection": True,
                    "blockTimeMS": int(READ_TIMEOUT_SECONDS * 2000),
                },
            }
        )
        try:
            started = time.monotonic()
            response = await client.get(url(), headers=AUTH)
            elapsed = time.monotonic() - started
        finally:
            await mongo.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "database_unavailable"
        assert response.headers["Retry-After"] == "5"
        assert elapsed < READ_TIMEOUT_SECONDS * 2
        assert (await client.get(url(), headers=AUTH)).status_code == 200
        await mongo.close()


async def test_no_database_configured_answers_503(build_app: BuildApp) -> None:
    _, client = await build_app(mongodb_url=None, read_api_keys=READ_KEYS)
    response = await client.get(url(), headers=AUTH)
    assert response.status_code == 503
    assert response.json()["error"] == "database_unavailable"
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {
        "broker": "up",
        "queue": "up",
        "redis": "up",
        "mongodb": "not_configured",
    }
