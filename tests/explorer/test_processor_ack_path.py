"""Seeded fault schedules through the processor's real ack path, checked by invariants.

Each seed builds the real subscriber (FastStream decoding, ack policy, the handler, the
bulk writer, the store's erasure checks) and ingest's real eraser, over an in-memory
quorum queue and an in-memory replica set whose every call draws a fault from the seed:
outages, timeouts, write-concern errors, partial bulk results, per-document errors, lost
replies, rollbacks of uncommitted writes, lost channels, failing dead-letter publishes,
shutdowns in the middle. Then faults stop, the queue drains, and the invariants are
checked. A failing seed prints its schedule and the command that replays it.
"""

import asyncio
import json
import os
import random
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from aio_pika.exceptions import ChannelInvalidStateError, DeliveryError
from faststream.rabbit import RabbitBroker
from faststream.rabbit.testing import TestRabbitBroker
from prometheus_client import CollectorRegistry

import ingest.erasures
import processor.handlers
from activity_contract.events import ActivityMessage
from activity_contract.storage import ACTIVITIES_COLLECTION, ERASURES_COLLECTION
from activity_contract.topology import ACTIVITY_QUEUE, MAX_MESSAGE_BYTES, QueueType, activity_queues
from activity_testing.fake_mongo import DATABASE_SITES, FakeDatabase
from activity_testing.fake_rabbit import SETTLE_FAULTS, FakeQueue, QueuedMessage, Settlement
from activity_testing.faults import FaultPlan
from activity_testing.simulation import (
    Trace,
    VirtualClockLoop,
    explore,
    run_simulated,
    virtual_datetime,
)
from ingest.domain_errors import DatabaseUnavailableError
from ingest.erasures import ActivityEraser
from processor.app import (
    GRACEFUL_TIMEOUT_SECONDS,
    SHUTDOWN_BOUND_SECONDS,
    build_processor,
    shutdown_hooks,
)
from processor.handlers import ActivityHandler
from processor.metrics import ProcessorMetrics
from processor.settings import ProcessorSettings

REPLAY = (
    "EXPLORE_SEED={seed} PYTHONHASHSEED=0 uv run --frozen pytest "
    "tests/explorer/test_processor_ack_path.py"
)
USERS = ("ada", "bob", "cy")
# Faults happen during this much virtual time; then everything heals and the queue drains.
FAULTY_SECONDS = 240.0
DRAIN_LIMIT_SECONDS = 4 * 3600.0
DEAD_LETTER_FAULTS = ("timeout", "channel_lost", "nacked")


@dataclass(frozen=True)
class Mix:
    """What a schedule publishes and which faults it may meet (the default: everything)."""

    # Messages by weight: events alone, groups (some with unreadable events), a client's
    # retry of an earlier message, and messages no reader can use.
    kinds: tuple[tuple[str, float], ...] = (
        ("single", 4),
        ("group", 4),
        ("retry", 1.5),
        ("poison", 0.5),
        ("deep", 0.3),
        ("old_version", 0.3),
    )
    group_flaws: tuple[tuple[str | None, float], ...] = (
        (None, 8),
        ("version", 1),
        ("missing", 1),
        ("not_object", 0.3),
    )
    lateness: tuple[float, ...] = (0.0, 0.0, 0.0004, 2.0, 3 * 86400.0)  # timestamp before receipt
    erase_right_after: float = 0.15  # an erasure of the user within the event's millisecond
    erasures: tuple[int, int] = (0, 3)  # erasures at random times, at least and at most
    other_routing_key: float = 0.1  # delivered under another binding's routing key
    calm_sites: frozenset[str] = frozenset()  # call sites that never fail
    episodes: bool = True  # outage and lost-majority episodes


QUIET = frozenset(("insert", "find", "delete", "update", "settle", "dead_letter"))
SINGLE = (("single", 1.0),)
# Mixes that focus a search on one family of faults (EXPLORE_FOCUS=name); the default
# explores them all at once.
NONE = {"erasures": (0, 0), "erase_right_after": 0.0, "other_routing_key": 0.0}
FOCUS = {
    "all": Mix(),
    # Write-concern errors and outages in episodes, as a replica set without majority gives.
    "write_concern": Mix(kinds=SINGLE, calm_sites=QUIET, **NONE),  # type: ignore[arg-type]
    "groups": Mix(kinds=(("group", 1.0),), calm_sites=QUIET, episodes=False, **NONE),  # type: ignore[arg-type]
    "unreadable": Mix(
        kinds=(("deep", 1.0), ("old_version", 1.0), ("single", 1.0)),
        calm_sites=QUIET,
        episodes=False,
        **NONE,  # type: ignore[arg-type]
    ),
    "dead_letter_outage": Mix(
        kinds=(("poison", 1.0),),
        calm_sites=QUIET - {"dead_letter"},
        episodes=False,
        **NONE,  # type: ignore[arg-type]
    ),
    "routing": Mix(
        kinds=(("poison", 1.0), ("single", 1.0)),
        erasures=(0, 0),
        erase_right_after=0.0,
        other_routing_key=0.5,
        calm_sites=QUIET,
        episodes=False,
    ),
    "erasure_precision": Mix(
        kinds=SINGLE,
        lateness=(0.0,),
        erasures=(0, 0),
        erase_right_after=1.0,
        other_routing_key=0.0,
        calm_sites=QUIET,
        episodes=False,
    ),
    "late_retries": Mix(
        kinds=SINGLE,
        lateness=(3 * 86400.0,),
        erasures=(1, 3),
        erase_right_after=0.0,
        other_routing_key=0.0,
        calm_sites=QUIET,
        episodes=False,
    ),
    "erasure_faults": Mix(
        kinds=(("single", 1.0), ("group", 1.0), ("retry", 1.0)),
        group_flaws=((None, 1.0),),
        lateness=(0.0,),
        erasures=(2, 4),
        erase_right_after=0.0,
        other_routing_key=0.0,
        calm_sites=frozenset({"insert", "update", "settle", "dead_letter"}),
        episodes=False,
    ),
    "shutdown": Mix(
        kinds=SINGLE,
        lateness=(0.0,),
        calm_sites=QUIET - {"insert"},
        episodes=False,
        **NONE,  # type: ignore[arg-type]
    ),
}
MIX = FOCUS["all"]  # what run_schedule explores (each test sets its own)

# More deliveries than this in one schedule is a message going round forever.
MAX_DELIVERIES = 1000


@dataclass
class PublishedEvent:
    """An event the explorer put on the queue, and whether it must be stored."""

    event_id: uuid.UUID
    user_id: str
    received_at: datetime
    timestamp: datetime
    storable: bool  # False: the processor must dead-letter it, never store it
    raw: Any = None  # what was published for it, when that is not a valid event


@dataclass
class Published:
    """A message the explorer published, and what it holds."""

    queued: QueuedMessage
    events: list[PublishedEvent]
    poison: bool  # no event of it can be read: dead-lettered whole, at once


@dataclass
class Erased:
    """An erasure that answered."""

    user_id: str
    erased_at: datetime


@dataclass
class DeadLetterSink:
    """The processor's dead-letter publisher, recording what reached the DLQ, with faults."""

    plan: FaultPlan
    loop: VirtualClockLoop
    published: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)
    failed: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)
    down: tuple[float, float] = (0.0, 0.0)  # when the dead-letter queue is unavailable

    async def publish(self, body: bytes, **options: Any) -> None:
        outcome = self.plan.draw("dead_letter", self.loop.time())
        if self.down[0] <= self.loop.time() < self.down[1]:
            outcome = "channel_lost"
        await asyncio.sleep(self.plan.rng.uniform(0.0005, 0.005))
        if outcome != "ok":
            self.failed.append((body, options))
        if outcome == "timeout":
            await asyncio.sleep(options.get("timeout") or 5.0)
            raise TimeoutError
        if outcome == "channel_lost":
            raise ChannelInvalidStateError("channel closed")
        if outcome == "nacked":
            raise DeliveryError(None, None)  # type: ignore[arg-type]
        self.published.append((body, options))

    def event_ids(self) -> set[str]:
        return {str(options.get("message_id")) for _, options in self.published}

    def holds(self, raw: Any) -> bool:
        """Whether this unreadable event reached the DLQ (by its id, or as it was)."""
        event_id = raw.get("event_id") if isinstance(raw, dict) else None
        return any(
            (event_id is not None and options.get("message_id") == event_id)
            or json.loads(body) == raw
            for body, options in self.published
        )


class Schedule:
    """One seeded run: publish, erase, fault, shut down, restart, heal, drain, check."""

    def __init__(self, rng: random.Random, trace: Trace, loop: VirtualClockLoop) -> None:
        self.rng = rng
        self.trace = trace
        self.loop = loop
        sites = {**DATABASE_SITES, "settle": SETTLE_FAULTS, "dead_letter": DEAD_LETTER_FAULTS}
        sites = {site: faults for site, faults in sites.items() if site not in MIX.calm_sites}
        self.plan = FaultPlan(rng, trace, sites, calm_after=FAULTY_SECONDS)
        self.database = FakeDatabase(self.plan, FAULTY_SECONDS if MIX.episodes else 0.0)
        self.delivery_limit = rng.choice([1, 2, 5])
        queue_type = rng.choice(list(QueueType))
        # Only quorum queues count deliveries; a classic queue redelivers without limit.
        broker_limit = self.delivery_limit if queue_type is QueueType.QUORUM else 10**9
        self.queue = FakeQueue(
            self.plan, broker_limit, nack_counts=rng.random() < 0.5, now=loop.time
        )
        self.queue.listeners.append(self._check_settlement)
        self.prefetch = rng.choice([1, 3, 20])
        self.settings = ProcessorSettings.model_construct(
            queue_type=queue_type,
            queue_delivery_limit=self.delivery_limit,
            processor_prefetch=self.prefetch,
            processor_batch_size=rng.choice([1, 4, 500]),
            processor_batch_wait_ms=rng.choice([1, 20, 50]),
        )
        self.published: list[Published] = []
        self.by_body: dict[bytes, Published] = {}
        self.erased: list[Erased] = []
        self.erasing: list[asyncio.Task[None]] = []
        self.done_publishing = False
        self.changed = asyncio.Event()
        self.dead_letters = DeadLetterSink(self.plan, loop)
        if "dead_letter" not in MIX.calm_sites and rng.random() < 0.3:
            start = rng.uniform(0, FAULTY_SECONDS)
            self.dead_letters.down = (start, min(start + rng.expovariate(1 / 60), FAULTY_SECONDS))
            trace.note(f"dead-letter queue down from {start:.3f}")
        self.trace.note(
            f"{queue_type} queue, delivery limit {self.delivery_limit}, "
            f"prefetch {self.prefetch}, nack counts "
            f"{self.queue.nack_counts}, batch {self.settings.processor_batch_size}"
        )

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> None:
        publishing = asyncio.create_task(self._publish_all())
        erasing = asyncio.create_task(self._erase_some())
        shutdown_at = self.rng.uniform(1, FAULTY_SECONDS) if self.rng.random() < 0.4 else None
        await self._consume(until=shutdown_at)
        if shutdown_at is not None:
            await self._consume(until=None)  # the restarted processor
        await publishing
        await erasing

    async def _consume(self, until: float | None) -> None:
        """One processor's life: consume until `until` (then shut down) or until drained."""
        broker, _, writer = self._processor()
        tasks: set[asyncio.Task[None]] = set()
        subscriber = broker.subscribers[0]  # before the test broker adds its own
        async with TestRabbitBroker(broker):
            while True:
                if self.queue.violations:
                    raise self.queue.violations[0]
                now = self.loop.time()
                if until is not None and now >= until:
                    break
                if until is None and self._drained(tasks):
                    break
                assert now < FAULTY_SECONDS + DRAIN_LIMIT_SECONDS, (
                    "the queue did not drain once faults stopped: "
                    f"{len(tasks)} handlers running, {len(self.queue.ready)} ready, "
                    f"{self.queue.in_hand()} in hand, unsettled: "
                    f"{[p.queued.message_id[:8] for p in self.published if not p.queued.settled]}"
                )
                assert self.queue.deliveries < MAX_DELIVERIES, (
                    f"{MAX_DELIVERIES} deliveries: a message is redelivered forever"
                )
                if self.queue.ready and self.queue.in_hand() < self.prefetch:
                    incoming = self.queue.deliver()
                    task = asyncio.create_task(self._handle(subscriber, incoming))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    continue
                self.changed.clear()
                wait = None if until is None else max(until - now, 0.0)
                with suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), timeout=min(wait or 60.0, 60.0))
            if until is not None:
                await self._shut_down(writer, tasks)

    async def _handle(self, subscriber: Any, incoming: Any) -> None:
        channel = incoming.channel
        tag = incoming.delivery_tag
        await subscriber.consume(incoming)
        if not channel.is_closed and tag in channel.unsettled:
            message = channel.unsettled[tag]
            self.queue.violations.append(
                AssertionError(f"message {message.message_id} left unsettled by its handler")
            )
        self.changed.set()

    async def _shut_down(self, writer: Any, tasks: set[asyncio.Task[None]]) -> None:
        """What the app does on SIGTERM, timed: its hooks around FastStream's graceful stop."""
        started = self.loop.time()
        self.trace.note(f"t={started:.3f} shutdown")
        before_stop, after_stop = shutdown_hooks(writer)
        await before_stop()
        if tasks:  # FastStream waits this long for handlers in flight
            await asyncio.wait(tasks, timeout=GRACEFUL_TIMEOUT_SECONDS)
        await after_stop()
        self.queue.lose_channel(self.queue.channel)  # the connection closes
        took = self.loop.time() - started
        assert took <= SHUTDOWN_BOUND_SECONDS, f"shutdown took {took:.1f} s"

    def _drained(self, tasks: set[asyncio.Task[None]]) -> bool:
        return (
            self.loop.time() > FAULTY_SECONDS
            and self.done_publishing
            and not tasks
            and not self.queue.ready
            and self.queue.in_hand() == 0
            and all(p.queued.settled for p in self.published)
        )

    def _processor(self) -> tuple[RabbitBroker, ActivityHandler, Any]:
        metrics = ProcessorMetrics(CollectorRegistry())
        broker, handler, writer = build_processor(
            self.settings,
            self.database,  # type: ignore[arg-type]
            metrics,
        )
        handler.dead_letters = self.dead_letters  # type: ignore[assignment]
        return broker, handler, writer

    # -- what is published and erased -------------------------------------------------------

    async def _publish_all(self) -> None:
        for _ in range(self.rng.randint(3, 14)):
            await asyncio.sleep(self.rng.expovariate(1 / 8))
            self._publish_one()
            self.changed.set()
        self.done_publishing = True

    def _publish_one(self) -> None:
        rng = self.rng
        kinds, weights = zip(*MIX.kinds, strict=True)
        kind = rng.choices(kinds, weights)[0]
        if kind == "retry" and self.published:
            earlier = rng.choice(self.published)
            if earlier.events and earlier.events[0].storable:
                self._enqueue(earlier.queued.body, earlier.events, poison=False)
                return
        if kind == "poison":
            self._enqueue(b'{"user_id": "ada", not json', [], poison=True)
            return
        if kind == "deep":
            self._enqueue(b"[" * 100_000 + b"]" * 100_000, [], poison=True)
            return
        if kind == "old_version":
            event, _ = self._event()
            body = json.loads(event.model_dump_json())
            body["schema_version"] = 2
            self._enqueue(json.dumps(body).encode(), [], poison=True)
            return
        if kind == "single":
            event, published = self._event()
            self._enqueue(event.model_dump_json().encode(), [published], poison=False)
            if rng.random() < MIX.erase_right_after:
                self.erasing.append(asyncio.create_task(self._erase(event.user_id, 0.0006)))
            return
        events: list[Any] = []
        expected: list[PublishedEvent] = []
        for _ in range(rng.randint(2, 5)):
            event, published = self._event()
            body = json.loads(event.model_dump_json())
            flaws, weights = zip(*MIX.group_flaws, strict=True)
            flaw = rng.choices(flaws, weights)[0]
            if flaw == "version":
                body["schema_version"] = 2
            elif flaw == "missing":
                del body["event_type"]
            elif flaw == "not_object":
                body = "an event"
            published.storable = flaw is None
            published.raw = None if flaw is None else body
            events.append(body)
            expected.append(published)
        group = {"group_id": str(uuid.UUID(int=rng.getrandbits(128))), "events": events}
        self._enqueue(json.dumps(group).encode(), expected, poison=False)

    def _event(self) -> tuple[ActivityMessage, PublishedEvent]:
        rng = self.rng
        received_at = self.loop.utcnow()
        late = rng.choice(MIX.lateness)
        event = ActivityMessage(
            event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            user_id=rng.choice(USERS),
            event_type="page_view",
            timestamp=received_at - timedelta(seconds=late),
            received_at=received_at,
            metadata={"n": rng.randrange(1000)},
        )
        return event, PublishedEvent(
            event.event_id, event.user_id, event.received_at, event.timestamp, True
        )

    def _enqueue(self, body: bytes, events: list[PublishedEvent], poison: bool) -> None:
        other = self.rng.random() < MIX.other_routing_key
        routing_key = "fanout-binding" if other else ACTIVITY_QUEUE
        queued = QueuedMessage(body, str(uuid.UUID(int=self.rng.getrandbits(128))), routing_key)
        published = Published(queued, events, poison)
        self.published.append(published)
        self.by_body.setdefault(body, published)
        self.queue.publish(queued)
        held = [str(e.event_id)[:8] + ("" if e.storable else "!") for e in events]
        self.trace.note(
            f"t={self.loop.time():.3f} publish {queued.message_id[:8]} "
            f"{'poison' if poison else held} via {routing_key}"
        )

    async def _erase_some(self) -> None:
        for _ in range(self.rng.randint(*MIX.erasures)):
            await asyncio.sleep(self.rng.uniform(0, FAULTY_SECONDS / 2))
            await self._erase(self.rng.choice(USERS), 0.0)
        await asyncio.gather(*self.erasing)

    async def _erase(self, user: str, after: float) -> None:
        await asyncio.sleep(after)
        eraser = ActivityEraser(self.database, "explorer")  # type: ignore[arg-type]
        try:
            erasure = await eraser.erase(user)
        except DatabaseUnavailableError:
            self.trace.note(f"t={self.loop.time():.4f} erasure of {user} failed (503)")
            return
        self.erased.append(Erased(user, erasure.erased_at))
        self.trace.note(f"t={self.loop.time():.4f} erased {user} at {erasure.erased_at}")

    # -- invariants --------------------------------------------------------------------------

    def _covered(self, event: PublishedEvent, erasures: dict[Any, dict[str, Any]]) -> bool:
        record = erasures.get(event.user_id)
        return record is not None and (
            event.received_at < record["erased_at"] or event.timestamp < record["erased_at"]
        )

    def _check_settlement(self, settlement: Settlement) -> None:
        """At each settlement: an ack only once every event is durable; poison never retried."""
        published = self.by_body[settlement.message.body]
        if published.poison:
            body = settlement.message.body
            handed_over = any(sent == body for sent, _ in self.dead_letters.published)
            could_not = any(sent == body for sent, _ in self.dead_letters.failed)
            if settlement.action == "requeue":
                assert could_not, "an unreadable message was requeued instead of dead-lettered"
            else:
                assert settlement.action == "reject" or handed_over, (
                    f"an unreadable message was settled with {settlement.action} without "
                    "reaching the dead-letter queue"
                )
            return
        if settlement.action == "reject":
            # A one-event message is its event: rejecting it dead-letters the event alone.
            assert len(published.events) == 1 or not any(e.storable for e in published.events), (
                "a group holding storable events was dead-lettered whole by the processor"
            )
        if settlement.action != "ack":
            return
        activities = self.database[ACTIVITIES_COLLECTION].committed
        erasures = self.database[ERASURES_COLLECTION].committed
        dead = self.dead_letters.event_ids()
        for event in published.events:
            if not event.storable:
                assert self.dead_letters.holds(event.raw), (
                    f"acked a message whose unreadable event {event.event_id} was not dead-lettered"
                )
                continue
            assert (
                event.event_id in activities
                or str(event.event_id) in dead
                or self._covered(event, erasures)
            ), f"acked a message whose event {event.event_id} is not durably stored"

    def check_end_state(self) -> None:
        """Once drained: nothing lost, nothing stored twice, erasures kept, nothing unsettled."""
        self.database.rollback()  # whatever a majority does not have is gone
        activities = self.database[ACTIVITIES_COLLECTION].committed
        erasures = self.database[ERASURES_COLLECTION].committed
        dead = self.dead_letters.event_ids()
        parked = {
            e.event_id
            for p in self.published
            if (p.queued.settled or "").startswith("dead_lettered")
            for e in p.events
        }
        for published in self.published:
            assert published.queued.settled, f"message {published.queued.message_id} unsettled"
            for event in published.events:
                if not event.storable:
                    assert event.event_id not in activities, f"unreadable {event.event_id} stored"
                    continue
                assert (
                    event.event_id in activities
                    or event.event_id in parked
                    or str(event.event_id) in dead
                    or self._covered(event, erasures)
                ), f"event {event.event_id} was lost"
        for erasure in self.erased:
            for published in self.published:
                for event in published.events:
                    if event.user_id != erasure.user_id:
                        continue
                    before = (
                        event.received_at < erasure.erased_at or event.timestamp < erasure.erased_at
                    )
                    assert not (before and event.event_id in activities), (
                        f"event {event.event_id} of {erasure.user_id} (received "
                        f"{event.received_at}, timestamp {event.timestamp}) is stored after the "
                        f"erasure at {erasure.erased_at}"
                    )


def check_bytes_in_flight_bound() -> None:
    """What the processor may hold at once is bounded in bytes by its defaults."""
    defaults = ProcessorSettings.model_construct()
    held = defaults.processor_prefetch * MAX_MESSAGE_BYTES
    assert held <= defaults.processor_max_bytes_in_flight, (
        f"prefetch x largest message = {held} bytes over the in-flight budget"
    )


@contextmanager
def virtual_clocks(loop: VirtualClockLoop) -> Iterator[None]:
    """Every `datetime.now` of the code under test reads the virtual clock."""
    modules = [ingest.erasures, processor.handlers]  # the modules that read the time
    originals = [getattr(module, "datetime") for module in modules]  # noqa: B009
    clock = virtual_datetime(loop)
    for module in modules:
        setattr(module, "datetime", clock)  # noqa: B010
    try:
        yield
    finally:
        for module, original in zip(modules, originals, strict=True):
            setattr(module, "datetime", original)  # noqa: B010


def run_schedule(rng: random.Random, trace: Trace) -> float:
    """One seed's schedule, start to finish; returns the virtual seconds it covered."""

    async def main(loop: VirtualClockLoop) -> None:
        with virtual_clocks(loop):
            schedule = Schedule(rng, trace, loop)
            await schedule.run()
            if schedule.queue.violations:
                raise schedule.queue.violations[0]
            schedule.check_end_state()

    return run_simulated(main)


def test_bytes_in_flight_are_bounded() -> None:
    check_bytes_in_flight_bound()


# Schedules per run: the full mix, then a shorter search focused on each fault family;
# each stops early past its real-time budget (seconds) on a loaded machine.
SCHEDULES = {"all": 1500} | {name: 100 for name in FOCUS if name != "all"}
BUDGET = {"all": 180.0} | {name: 25.0 for name in FOCUS if name != "all"}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("focus", list(FOCUS))
def test_nothing_accepted_is_lost_under_seeded_fault_schedules(
    focus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every invariant holds on every seed; `EXPLORE_FOCUS` picks one mix for a replay."""
    chosen = os.environ.get("EXPLORE_FOCUS")
    if chosen is not None and chosen != focus:
        pytest.skip(f"EXPLORE_FOCUS={chosen}")
    monkeypatch.setattr(sys.modules[__name__], "MIX", FOCUS[focus])
    replay = f"EXPLORE_FOCUS={focus} {REPLAY}"
    explore(f"processor ack path, {focus}", run_schedule, replay, SCHEDULES[focus], BUDGET[focus])


def test_queue_topology_dead_letters_natively() -> None:
    dead_letter, activity = activity_queues(ProcessorSettings.model_construct().queue_type, 5)
    assert activity.arguments["x-dead-letter-routing-key"] == dead_letter.name
