"""The read API with a large collection on the embedded database (SecantusDB, issue 18).

A page must cost work in proportion to the page, not to the collection. SecantusDB's
`explain` cannot show that (it reports an index scan for a hinted query that reads the
whole index), so this test measures the work itself: the CPU time the database server
spends answering the pages. CPU time, unlike latency, hardly depends on what else runs on
the machine.
"""

import os
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from activity_contract.storage import (
    ACTIVITIES_COLLECTION,
    EVENT_TYPE_INDEX,
    EVENT_TYPE_KEYS,
    USER_TIMELINE_INDEX,
    USER_TIMELINE_KEYS,
)
from activity_testing.processes import SecantusServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Large enough that a page reading the whole collection costs about a second (2 s per page
# at twice the size before the fix), small enough to load in about 20 s.
BuildApp = Callable[..., Awaitable[tuple[FastAPI, httpx.AsyncClient]]]
STORED_EVENTS = 50_000
USERS = 500
INSERT_BATCH = 5_000
READ_KEY = "scale-read-key"
AUTH = {"Authorization": f"Bearer {READ_KEY}"}
BASE = datetime(2026, 1, 1, tzinfo=UTC)
TYPES = ("page_view", "click", "login", "purchase")
# 15 pages cost about 0.1 s of the server's CPU; one page reading the whole collection
# costs more than this on its own.
MAX_SERVER_CPU_SECONDS = 0.75


def stored_events(count: int, seed: int = 18) -> list[dict[str, Any]]:
    """`count` documents as the processor stores them, spread over users and 30 days."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    documents = []
    for _ in range(count):
        timestamp = BASE + timedelta(milliseconds=rng.randrange(30 * 86_400_000))
        documents.append(
            {
                "_id": uuid.UUID(int=rng.getrandbits(128), version=4),
                "user_id": f"user-{rng.randrange(USERS)}",
                "event_type": rng.choice(TYPES),
                "timestamp": timestamp,
                "metadata": {"path": "/home", "n": rng.randrange(1000)},
                "received_at": timestamp,
                "processed_at": timestamp + timedelta(milliseconds=5),
                "redelivered": False,
                "schema_version": 1,
            }
        )
    return documents


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process `pid` has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_pages_cost_the_page_not_the_collection(build_app: BuildApp, tmp_path: Path) -> None:
    # A server of its own: its CPU time is this test's reads only. Durability is not
    # what is tested, so commits are not synced (it loads faster).
    with SecantusServer(tmp_path / "secantus", sync_on_commit=False) as server:
        assert server.process is not None
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            server.url, tz_aware=True, uuidRepresentation="standard"
        )
        collection = mongo["scale"][ACTIVITIES_COLLECTION]
        await collection.create_index(list(USER_TIMELINE_KEYS), name=USER_TIMELINE_INDEX)
        await collection.create_index(list(EVENT_TYPE_KEYS), name=EVENT_TYPE_INDEX)
        documents = stored_events(STORED_EVENTS)
        for start in range(0, STORED_EVENTS, INSERT_BATCH):
            await collection.insert_many(documents[start : start + INSERT_BATCH], ordered=False)

        def newest_first(user_id: str, event_type: str | None = None) -> list[str]:
            chosen = [
                d
                for d in documents
                if d["user_id"] == user_id and event_type in (None, d["event_type"])
            ]
            chosen.sort(key=lambda d: (d["timestamp"], d["_id"]), reverse=True)
            return [str(d["_id"]) for d in chosen]

        await mongo.close()
        _, client = await build_app(
            mongodb_url=server.url, mongodb_database="scale", read_api_keys=[READ_KEY]
        )

        async def get(user_id: str, **params: Any) -> dict[str, Any]:
            response = await client.get(
                f"/api/v1/users/{user_id}/activities", params=params, headers=AUTH
            )
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        started = cpu_seconds(server.process.pid)

        # Users with events: three pages of one, by cursor, then the filters.
        first = await get("user-7", limit=40)
        second = await get("user-7", limit=40, cursor=first["next_cursor"])
        third = await get("user-7", limit=40, cursor=second["next_cursor"])
        clicks = await get("user-8", event_type="click")
        window = await get("user-9", since="2026-01-10T00:00:00Z", until="2026-01-20T00:00:00Z")
        others = [await get(f"user-{i}") for i in range(100, 105)]
        # Users without events, on the first page and after a cursor of someone else's.
        nobody = [await get(f"nobody-{i}") for i in range(3)]
        nobody.append(await get("nobody", cursor=first["next_cursor"]))

        used = cpu_seconds(server.process.pid) - started

        def ids(*pages: dict[str, Any]) -> list[str]:
            return [item["event_id"] for page in pages for item in page["items"]]

        assert ids(first, second, third) == newest_first("user-7")  # 116 events
        assert third["next_cursor"] is None
        assert ids(clicks) == newest_first("user-8", "click")  # 29 clicks
        assert window["items"]
        assert all("2026-01-10" <= item["timestamp"] < "2026-01-20" for item in window["items"])
        assert all(len(page["items"]) == 50 for page in others)
        assert all(page == {"items": [], "next_cursor": None} for page in nobody)
        assert used < MAX_SERVER_CPU_SECONDS, f"15 pages cost the server {used:.2f} s of CPU"
