"""An in-memory MongoDB for the explorers: the collection calls the services make, with faults.

Durability is modelled the way a replica set behaves: a write acknowledged by a majority
moves the commit point past everything written before it (`committed`); a write that
answered a write-concern error, or whose reply was lost, is applied but not committed, and
a `rollback` (the primary lost its majority and stepped down) undoes whatever was not
committed. Values pass through BSON, so datetimes are kept at whole milliseconds as
MongoDB keeps them.
"""

import asyncio
import copy
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from bson import decode, encode
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ExecutionTimeout,
    NetworkTimeout,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

from activity_testing.faults import FaultPlan

CODEC: CodecOptions[dict[str, Any]] = CodecOptions(
    tz_aware=True, uuid_representation=UuidRepresentation.STANDARD
)
DUPLICATE_KEY = 11000
REFUSED = 2  # BadValue: the server refuses this document
TRANSIENT = 91  # ShutdownInProgress: try again
WRITE_CONCERN_FAILED = 64  # WriteConcernFailed: majority not reached in time
# Faults at each kind of call; `timeout` waits this long before failing (a socket timeout).
INSERT_FAULTS = ("outage", "timeout", "partial", "write_concern", "document_errors", "rollback")
READ_FAULTS = ("outage", "timeout", "rollback")
WRITE_FAULTS = ("outage", "timeout", "reply_lost", "write_concern", "rollback")
DATABASE_SITES = {
    "insert": INSERT_FAULTS,
    "find": READ_FAULTS,
    "delete": WRITE_FAULTS,
    "update": WRITE_FAULTS,
}
SLOW_SECONDS = 30.0


def _bson(value: Mapping[str, Any]) -> dict[str, Any]:
    raw = value.raw if isinstance(value, RawBSONDocument) else encode(value, codec_options=CODEC)
    return decode(raw, codec_options=CODEC)


def matches(document: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    """The subset of MongoDB's query language the services use."""
    for key, condition in query.items():
        if key == "$or":
            if not any(matches(document, branch) for branch in condition):
                return False
            continue
        value = document.get(key)
        if isinstance(condition, Mapping) and any(op.startswith("$") for op in condition):
            for op, operand in condition.items():
                if not _compare(op, value, operand):
                    return False
        elif value != condition:
            return False
    return True


def _compare(op: str, value: Any, operand: Any) -> bool:
    if op == "$in":
        return value in operand
    if value is None:
        return False
    if op == "$lt":
        return bool(value < operand)
    if op == "$lte":
        return bool(value <= operand)
    if op == "$gt":
        return bool(value > operand)
    if op == "$gte":
        return bool(value >= operand)
    raise NotImplementedError(op)


@dataclass
class DeleteResult:
    """What `delete_many` answers."""

    deleted_count: int


@dataclass
class UpdateResult:
    """What `update_one` answers."""

    matched_count: int


ResultT = TypeVar("ResultT")


class FakeCollection:
    """One collection: current documents, and those a majority has (committed)."""

    def __init__(self, database: "FakeDatabase", name: str) -> None:
        """An empty collection."""
        self.database = database
        self.name = name
        self.documents: dict[Any, dict[str, Any]] = {}
        self.committed: dict[Any, dict[str, Any]] = {}

    async def insert_many(
        self, documents: Sequence[Mapping[str, Any]], ordered: bool = True, **_: Any
    ) -> None:
        """Insert unordered; duplicates and drawn faults answer as MongoDB does."""
        if ordered:
            raise NotImplementedError("the services insert unordered")
        decoded = [_bson(document) for document in documents]
        outcome = await self.database.before("insert")
        if outcome in ("outage", "timeout"):
            if outcome == "timeout" and self.database.plan.chance(0.5):
                self._apply_inserts(decoded, errors={})
            raise _failure(outcome)
        if outcome == "partial":
            self._apply_inserts(decoded[: self.database.plan.rng.randrange(len(decoded) + 1)], {})
            raise AutoReconnect("connection closed mid-insert")
        errors: dict[int, int] = {}
        if outcome == "document_errors":
            for index in range(len(decoded)):
                if self.database.plan.chance(0.3):
                    errors[index] = self.database.plan.rng.choice([REFUSED, TRANSIENT])
        write_errors = self._apply_inserts(decoded, errors)
        details: dict[str, Any] = {"writeErrors": write_errors, "writeConcernErrors": []}
        if outcome == "write_concern":
            details["writeConcernErrors"] = [
                {"code": WRITE_CONCERN_FAILED, "errmsg": "waiting for replication timed out"}
            ]
        else:
            self.database.commit()
        if write_errors or details["writeConcernErrors"]:
            raise BulkWriteError(details)

    def _apply_inserts(
        self, documents: list[dict[str, Any]], errors: dict[int, int]
    ) -> list[dict[str, Any]]:
        write_errors = []
        for index, document in enumerate(documents):
            code = errors.get(index)
            if code is None and document["_id"] in self.documents:
                code = DUPLICATE_KEY
            if code is None:
                self.documents[document["_id"]] = document
            else:
                write_errors.append({"index": index, "code": code, "errmsg": f"code {code}"})
        return write_errors

    def find(self, query: Mapping[str, Any], *_: Any, **__: Any) -> "FakeCursor":
        """A cursor whose first fetch draws the read's fault."""
        return FakeCursor(self, _bson(query))

    async def find_one(self, query: Mapping[str, Any], *_: Any, **__: Any) -> Any:
        """The first match, or None."""
        async for document in self.find(query):
            return document
        return None

    async def delete_many(self, query: Mapping[str, Any], **_: Any) -> DeleteResult:
        """Delete what matches; a lost reply or a write-concern error leaves it uncommitted."""
        query = _bson(query)
        outcome = await self.database.before("delete")
        if outcome in ("outage", "timeout"):
            raise _failure(outcome)
        doomed = [key for key, document in self.documents.items() if matches(document, query)]
        for key in doomed:
            del self.documents[key]
        return self._answer_write(outcome, DeleteResult(len(doomed)))

    async def update_one(
        self, query: Mapping[str, Any], update: Mapping[str, Any], upsert: bool = False, **_: Any
    ) -> UpdateResult:
        """`$set` / `$max` on the first match (or an upserted document)."""
        query, update = _bson(query), _bson(update)
        outcome = await self.database.before("update")
        if outcome in ("outage", "timeout"):
            raise _failure(outcome)
        found = next((d for d in self.documents.values() if matches(d, query)), None)
        if found is None and not upsert:
            return self._answer_write(outcome, UpdateResult(0))
        document = dict(found) if found is not None else {"_id": query["_id"]}
        for field, value in update.get("$set", {}).items():
            document[field] = value
        for field, value in update.get("$max", {}).items():
            if field not in document or document[field] < value:
                document[field] = value
        self.documents[document["_id"]] = document
        return self._answer_write(outcome, UpdateResult(int(found is not None)))

    def _answer_write(self, outcome: str, result: ResultT) -> ResultT:
        if outcome == "reply_lost":
            raise AutoReconnect("connection closed before the reply")
        if outcome == "write_concern":
            raise WriteConcernError("waiting for replication timed out", WRITE_CONCERN_FAILED)
        self.database.commit()
        return result


class MajorityReads:
    """A collection read with read concern "majority": only what is committed."""

    def __init__(self, collection: FakeCollection) -> None:
        """Reads of `collection`."""
        self._collection = collection

    def find(self, query: Mapping[str, Any], *_: Any, **__: Any) -> "FakeCursor":
        """A cursor over the committed documents."""
        return FakeCursor(self._collection, _bson(query), committed=True)


class FakeCursor:
    """What `find` returns: iterable once, faults drawn at the first fetch."""

    def __init__(
        self, collection: FakeCollection, query: dict[str, Any], committed: bool = False
    ) -> None:
        """A query not yet sent."""
        self._collection = collection
        self._query = query
        self._committed = committed

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        """Fetch on first iteration."""
        return self._fetch()

    async def _fetch(self) -> AsyncIterator[dict[str, Any]]:
        outcome = await self._collection.database.before("find")
        if outcome != "ok":
            raise _failure(outcome)
        source = self._collection.committed if self._committed else self._collection.documents
        for document in list(source.values()):
            if matches(document, self._query):
                yield copy.deepcopy(document)

    async def to_list(self, length: int | None = None) -> list[dict[str, Any]]:
        """Every match."""
        return [document async for document in self]

    def __getattr__(self, name: str) -> Any:
        """Cursor options the explorer has no use for."""

        # projection, sort, limit, max_time_ms...: accepted and ignored.
        def ignore(*_: Any, **__: Any) -> "FakeCursor":
            return self

        return ignore


@dataclass
class Episode:
    """A stretch of time when the database is down, or its primary has no majority."""

    start: float
    end: float
    kind: str  # "down": every call fails; "no_majority": writes apply, unconfirmed
    rolls_back: bool  # when a no-majority stretch ends, its writes are rolled back


class FakeDatabase:
    """The collections, their commit point, and the fault plan every call draws from.

    Besides the fault drawn per call, faults come in episodes, as real outages do: the
    database is unreachable for a while, or its primary lost its majority (writes apply
    but are not confirmed, and are rolled back when the episode ends).
    """

    def __init__(self, plan: FaultPlan, faulty_seconds: float = 0.0) -> None:
        """Empty; faults from `plan`; outage episodes within the first `faulty_seconds`."""
        self.plan = plan
        self.collections: dict[str, FakeCollection] = {}
        self.calls = 0
        self.episodes: list[Episode] = []
        for _ in range(plan.rng.choice([0, 0, 1, 2, 3]) if faulty_seconds else 0):
            start = plan.rng.uniform(0, faulty_seconds)
            end = min(start + plan.rng.expovariate(1 / 40), faulty_seconds)
            kind = plan.rng.choice(["down", "no_majority"])
            self.episodes.append(Episode(start, end, kind, plan.rng.random() < 0.7))
            plan.trace.note(f"episode {kind} from {start:.3f} to {end:.3f}")

    def _episode_outcome(self, site: str, now: float) -> str | None:
        for episode in self.episodes:
            if episode.kind == "no_majority" and episode.rolls_back and now >= episode.end:
                episode.rolls_back = False
                self.rollback()
            if episode.start <= now < episode.end:
                if episode.kind == "down":
                    return "outage"
                if site in ("insert", "delete", "update"):
                    return "write_concern"
        return None

    def __getitem__(self, name: str) -> FakeCollection:
        """A collection by name, created on first use."""
        if name not in self.collections:
            self.collections[name] = FakeCollection(self, name)
        return self.collections[name]

    def get_database(self, *_: Any, **__: Any) -> "FakeDatabase":
        """The same database, whatever name or write concern (a client's call)."""
        return self

    def get_collection(
        self, name: str, *_: Any, read_concern: Any = None, **__: Any
    ) -> "FakeCollection | MajorityReads":
        """A collection by name; with read concern "majority", reads see committed data only."""
        if read_concern is not None and read_concern.level == "majority":
            return MajorityReads(self[name])
        return self[name]

    async def before(self, site: str) -> str:
        """Draw this call's outcome and take its time."""
        self.calls += 1
        loop = asyncio.get_running_loop()
        outcome = self._episode_outcome(site, loop.time()) or self.plan.draw(site, loop.time())
        if outcome == "rollback":
            self.rollback()
            outcome = "ok"
        await asyncio.sleep(
            SLOW_SECONDS if outcome == "timeout" else self.plan.rng.uniform(0.0005, 0.02)
        )
        return outcome

    def commit(self) -> None:
        """A majority acknowledged a write: everything before it is committed."""
        for collection in self.collections.values():
            collection.committed = dict(
                collection.documents
            )  # documents are replaced, never changed

    def rollback(self) -> None:
        """The primary lost its majority: what was not committed is undone."""
        self.plan.trace.note("rollback of uncommitted writes")
        for collection in self.collections.values():
            collection.documents = dict(collection.committed)

    async def close(self) -> None:
        """Nothing to close."""


def _failure(outcome: str) -> Exception:
    if outcome == "timeout":
        return NetworkTimeout("timed out")
    return (
        ServerSelectionTimeoutError("no primary")
        if outcome == "outage"
        else ExecutionTimeout(outcome)
    )


def stored_before(document: Mapping[str, Any], field: str, moment: datetime) -> bool:
    """Whether a stored datetime field is before `moment` (as MongoDB would compare)."""
    value = document.get(field)
    return isinstance(value, datetime) and value < moment
