"""Beanie against the raw driver path, in process, on a fresh SecantusDB (`--sync-on-commit`).

Writes: `BATCH` events stored per round, either as the processor stores them (each event
encoded to BSON alone, one unordered `insert_many` of the bytes) or through Beanie (one
`Activity` document per event, `Activity.insert_many`); wall time and this process's CPU
time per event, from the validated messages to the acknowledged durable insert.

Reads: one page of a user's activity as the read API reads it (`ActivityReader.page`:
Beanie's `find`, `sort`, `limit` and `project`), and the same query through PyMongo with
`ActivityOut.model_validate` per document (the read path before Beanie).

Rounds alternate the two ways (ABBA), so drift of the shared machine falls on both;
medians are reported. Run: `python -m bench.beanie_paths [--rounds 20] [--batch 500]`.
"""

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from activity_contract.events import ActivityIn, ActivityMessage, ActivityOut
from activity_contract.storage import ACTIVITIES_COLLECTION
from activity_testing.events import event_payload
from activity_testing.processes import SecantusServer
from ingest.reads import NEWEST_FIRST, ActivityQuery, ActivityReader
from processor.documents import (
    Activity,
    ActivityStore,
    EncodedActivity,
    init_documents,
    mongo_client,
)

Measure = Callable[[], Awaitable[None]]


def messages(count: int, user_id: str) -> list[ActivityMessage]:
    """`count` distinct events of `user_id`, as the processor receives them."""
    received = datetime.now(UTC)
    return [
        ActivityIn.model_validate(
            event_payload(event_id=str(uuid.uuid4()), user_id=user_id)
        ).to_message(received)
        for _ in range(count)
    ]


async def timed(measure: Measure) -> tuple[float, float]:
    """Wall and CPU seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    await measure()
    return time.perf_counter() - wall, time.process_time() - cpu


async def interleaved(rounds: int, a: Measure, b: Measure) -> dict[str, list[float]]:
    """`rounds` of each, ABBA order; wall and CPU seconds of every call."""
    times: dict[str, list[float]] = {"a_wall": [], "a_cpu": [], "b_wall": [], "b_cpu": []}
    for number in range(rounds):
        order = (("a", a), ("b", b)) if number % 2 == 0 else (("b", b), ("a", a))
        for name, measure in order:
            wall, cpu = await timed(measure)
            times[f"{name}_wall"].append(wall)
            times[f"{name}_cpu"].append(cpu)
    return times


def report(title: str, names: tuple[str, str], times: dict[str, list[float]], per: int) -> None:
    """Medians per unit (microseconds) and the ratio b / a."""
    print(f"{title} (medians, us per {'event' if per > 1 else 'page'}):")
    for kind in ("wall", "cpu"):
        a = statistics.median(times[f"a_{kind}"]) / per * 1e6
        b = statistics.median(times[f"b_{kind}"]) / per * 1e6
        print(f"  {kind:4}  {names[0]} {a:9.1f}   {names[1]} {b:9.1f}   ratio {b / a:.3f}")


async def writes(url: str, rounds: int, batch: int) -> None:
    """Raw BSON bulk insert against Beanie's `insert_many`, per event."""
    client = mongo_client(url)
    store = ActivityStore(await init_documents(client, "bench_writes"))

    async def raw() -> None:
        processed_at = datetime.now(UTC)
        encoded = [EncodedActivity.of(m, processed_at, False) for m in messages(batch, "raw")]
        await store.insert_many(encoded)

    async def beanie() -> None:
        processed_at = datetime.now(UTC)
        documents = []
        for message in messages(batch, "beanie"):
            form = Activity.stored_form(message, processed_at, False)
            documents.append(Activity.model_validate({**form, "id": form.pop("_id")}))
        await Activity.insert_many(documents, ordered=False)

    await raw()  # warm-up: connections, first inserts
    await beanie()
    times = await interleaved(rounds, raw, beanie)
    report(f"writes: {rounds} x {batch} events each way", ("raw", "beanie"), times, batch)
    # Building the messages is in both; its own cost, to read the ratio above against.
    cpu = time.process_time()
    messages(batch, "x")
    building = (time.process_time() - cpu) / batch * 1e6
    print(f"  building the messages, in both: {building:.1f} us CPU per event")
    await client.close()


async def reads(url: str, rounds: int, stored: int, limits: tuple[int, ...]) -> None:
    """One page through Beanie (the read path) against PyMongo + model_validate."""
    client = mongo_client(url)
    database = await init_documents(client, "bench_reads")
    base = datetime(2026, 1, 1, tzinfo=UTC)
    documents: list[dict[str, Any]] = [
        {
            "_id": uuid.uuid4(),
            "user_id": "alice",
            "event_type": "page_view",
            "timestamp": base + timedelta(seconds=i),
            "metadata": {"path": "/home", "i": i},
            "received_at": base,
            "processed_at": base,
            "redelivered": False,
            "schema_version": 1,
        }
        for i in range(stored)
    ]
    await database[ACTIVITIES_COLLECTION].insert_many(documents)
    reader = ActivityReader(url, "bench_reads")
    collection = reader.client["bench_reads"][ACTIVITIES_COLLECTION]
    sort = [(key.lstrip("-"), -1) for key in NEWEST_FIRST]
    for limit in limits:
        query = ActivityQuery(user_id="alice", limit=limit)

        async def driver(query: ActivityQuery = query) -> None:
            found = collection.find(query.filters()[0]).sort(sort).limit(query.limit + 1)
            [ActivityOut.model_validate(document) for document in await found.to_list()]

        async def beanie(query: ActivityQuery = query) -> None:
            await reader.page(query)

        await driver()  # warm-up (the reader binds Beanie on its first page)
        await beanie()
        times = await interleaved(rounds, driver, beanie)
        title = f"reads: page of {limit} of {stored} stored, {rounds} pages each way"
        report(title, ("pymongo", "beanie"), times, 1)
    await reader.close()
    await client.close()


async def main() -> None:
    """Start a database, measure, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--read-rounds", type=int, default=200)
    arguments = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as scratch,
        SecantusServer(Path(scratch) / "secantus") as server,
    ):
        await writes(server.url, arguments.rounds, arguments.batch)
        await reads(server.url, arguments.read_rounds, 1000, (50, 500))


if __name__ == "__main__":
    asyncio.run(main())
