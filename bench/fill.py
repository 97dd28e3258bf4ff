"""Fill the activities collection straight in the database (issue 18's data sizes).

Documents have the stored form the processor writes, spread over `users` users and the
last 30 days, and the collection has the processor's indexes (names and keys from
`activity_contract.storage`), so reads and inserts meet the same index work as in
production.
"""

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from activity_contract.storage import (
    ACTIVITIES_COLLECTION,
    EVENT_TYPE_INDEX,
    EVENT_TYPE_KEYS,
    USER_TIMELINE_INDEX,
    USER_TIMELINE_KEYS,
)
from bench.stack import SystemStack, say

FILL_USER_PREFIX = "bench-fill-"
NO_EVENTS_USER_PREFIX = "bench-nobody-"
FILL_BATCH = 1000
FILL_LANES = 2
SPREAD = timedelta(days=30)
EVENT_TYPES = ("page_view", "click", "search", "purchase")


def fill_documents(count: int, users: int, rng: random.Random) -> list[dict[str, Any]]:
    """`count` stored-form documents of users FILL_USER_PREFIX<0..users-1>."""
    now = datetime.now(UTC)
    documents = []
    for _ in range(count):
        when = now - SPREAD * rng.random()
        user = rng.randrange(users)
        documents.append(
            {
                "_id": uuid.UUID(int=rng.getrandbits(128), version=4),
                "user_id": f"{FILL_USER_PREFIX}{user}",
                "event_type": rng.choice(EVENT_TYPES),
                "timestamp": when.replace(microsecond=when.microsecond // 1000 * 1000),
                "metadata": {"path": f"/page/{user % 97}", "referrer": "bench-fill"},
                "received_at": when,
                "processed_at": when,
                "redelivered": False,
                "schema_version": 1,
            }
        )
    return documents


async def _reset(stack: SystemStack) -> None:
    client = stack.mongo()
    try:
        collection = client[stack.database][ACTIVITIES_COLLECTION]
        await collection.drop()
        await collection.create_index(list(USER_TIMELINE_KEYS), name=USER_TIMELINE_INDEX)
        await collection.create_index(list(EVENT_TYPE_KEYS), name=EVENT_TYPE_INDEX)
    finally:
        await client.close()


def reset_activities(stack: SystemStack) -> None:
    """An empty activities collection with the processor's indexes."""
    asyncio.run(_reset(stack))


async def _fill(stack: SystemStack, count: int, users: int, seed: int) -> float:
    client = stack.mongo()
    rng = random.Random(seed)
    started = last_said = time.perf_counter()
    done = 0
    try:
        collection = client[stack.database][ACTIVITIES_COLLECTION]
        sizes = [FILL_BATCH] * (count // FILL_BATCH) + [count % FILL_BATCH]
        sizes = [size for size in sizes if size]

        async def lane(mine: list[int]) -> None:
            nonlocal done, last_said
            for size in mine:
                await collection.insert_many(fill_documents(size, users, rng), ordered=False)
                done += size
                now = time.perf_counter()
                if now - last_said >= 5:
                    last_said = now
                    say(f"    fill: {done:,} of {count:,}, {done / (now - started):,.0f}/s")

        await asyncio.gather(*(lane(sizes[i::FILL_LANES]) for i in range(FILL_LANES)))
    finally:
        await client.close()
    return done / (time.perf_counter() - started)


def fill(stack: SystemStack, count: int, users: int, seed: int = 0) -> float:
    """Insert `count` documents straight into the collection; return documents/s."""
    return asyncio.run(_fill(stack, count, users, seed))
