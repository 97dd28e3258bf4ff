"""Deterministic simulation for the fault-schedule explorers.

Real asyncio code runs on an event loop whose clock is virtual: when nothing is ready the
clock jumps to the next timer, so a 60 s retry budget costs no real time and every run
of one seed takes the same path. A task that would wait forever (nothing ready, no timer)
is a `DeadlockError`; a task that spins without letting the clock move is a
`LivelockError`. Every random choice comes from one `random.Random(seed)`; a failing seed
is reported with the one command that replays it.
"""

import asyncio
import math
import os
import random
import selectors
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# The virtual clock starts here, so datetimes derived from it look like real ones.
SIMULATION_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# Seeds replay identically only with the same string hashing (set iteration order).
HASH_SEED = "0"


class DeadlockError(RuntimeError):
    """Nothing is ready and no timer is set: some task waits for what never comes."""


class LivelockError(RuntimeError):
    """The loop keeps running callbacks while the clock never moves: some task spins."""


# Loop iterations in a row at one instant before the run counts as spinning; the busiest
# schedule settles a few hundred messages, each a few dozen iterations.
SPIN_LIMIT = 200_000


class _Keys(Mapping[Any, selectors.SelectorKey]):
    def __init__(self, keys: dict[Any, selectors.SelectorKey]) -> None:
        self._keys = keys

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys[fileobj]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class _InstantSelector(selectors.BaseSelector):
    """A selector that never waits: it moves the loop's clock by the timeout instead."""

    def __init__(self, loop: "VirtualClockLoop") -> None:
        self._loop = loop
        self._keys: dict[Any, selectors.SelectorKey] = {}
        self._still = 0

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, fileobj, events, data)
        self._keys[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise DeadlockError("nothing is ready and no timer is set: a task waits forever")
        moved = self._loop.catch_up_with_timers(timeout)
        if moved:
            self._still = 0
            return []
        self._still += 1
        if self._still > SPIN_LIMIT:
            ready = list(self._loop._ready)[:3]
            raise LivelockError(
                f"{SPIN_LIMIT:,} loop iterations without the clock moving; ready: {ready}"
            )
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return _Keys(self._keys)

    def close(self) -> None:
        self._keys.clear()


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: no real I/O, no real waiting."""

    # asyncio's own, not in its stubs: what is ready, the timer heap, the timer slack.
    _ready: deque[asyncio.Handle]
    _scheduled: list[asyncio.TimerHandle]
    _clock_resolution: float

    def __init__(self) -> None:
        """Start the clock at zero."""
        self._now = 0.0
        super().__init__(selector=_InstantSelector(self))

    def time(self) -> float:
        """Virtual seconds since the simulation began."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (never back), by at least one step when asked to move."""
        if seconds > 0:
            self._now = max(self._now + seconds, math.nextafter(self._now, math.inf))

    def catch_up_with_timers(self, timeout: float) -> bool:
        """Wait `timeout`, then move on to every timer the loop is about to run.

        asyncio runs a timer up to its clock's resolution early, which is harmless while
        real time moves on; here the clock would stay short of the deadline, and a task
        that waits for it would wait again at the same instant for ever. So the clock
        first reaches the latest timer that will run. Returns whether it moved.
        """
        before = self._now
        self.advance(timeout)
        horizon = self._now + self._clock_resolution
        due = [handle.when() for handle in self._scheduled if handle.when() < horizon]
        self._now = max([self._now, *due])
        return self._now > before

    def utcnow(self) -> datetime:
        """The virtual clock as an aware UTC datetime."""
        return SIMULATION_EPOCH + timedelta(seconds=self._now)


def virtual_datetime(loop: VirtualClockLoop) -> type[datetime]:
    """A `datetime` class whose `now()` reads the loop's virtual clock (patch it in)."""

    class VirtualDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> "VirtualDatetime":
            value = loop.utcnow()
            value = value if tz is None else value.astimezone(tz)
            return cls.fromtimestamp(value.timestamp(), tz)

    return VirtualDatetime


def run_simulated(main: Callable[[VirtualClockLoop], Awaitable[None]]) -> float:
    """Run `main` on a fresh virtual-clock loop; return the virtual seconds it took."""
    loop = VirtualClockLoop()
    try:
        loop.run_until_complete(main(loop))
        return loop.time()
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


@dataclass
class Trace:
    """What one schedule did, step by step: printed when it fails."""

    seed: int
    steps: list[str] = field(default_factory=list)

    def note(self, step: str) -> None:
        """Record one step (a fault drawn, a message settled, an erasure)."""
        self.steps.append(step)


class ScheduleFailedError(AssertionError):
    """An invariant broke on one seed."""


@dataclass
class Exploration:
    """What an explorer run covered."""

    name: str
    schedules: int
    seconds: float
    virtual_seconds: float


# Printed at the end of the test session (conftest) so CI shows what was explored.
EXPLORATIONS: list[Exploration] = []


def explore(
    name: str,
    schedule: Callable[[random.Random, Trace], float],
    replay: str,
    default_schedules: int,
    budget_seconds: float | None = None,
) -> Exploration:
    """Run `schedule` on many seeds; raise `ScheduleFailedError` naming the first failing one.

    `EXPLORE_SEED=n` runs seed n alone; `EXPLORE_SCHEDULES=n` sets how many seeds (from
    `EXPLORE_FIRST_SEED`, default 0). `replay` is the command that replays a seed, with
    `{seed}` in it. Without `EXPLORE_SCHEDULES`, the run also stops once `budget_seconds`
    of real time are spent (a loaded machine runs fewer seeds; the count is reported).
    """
    if "EXPLORE_SCHEDULES" in os.environ or "EXPLORE_SEED" in os.environ:
        budget_seconds = None
    if "EXPLORE_SEED" in os.environ:
        seeds = range(int(os.environ["EXPLORE_SEED"]), int(os.environ["EXPLORE_SEED"]) + 1)
    else:
        first = int(os.environ.get("EXPLORE_FIRST_SEED", "0"))
        seeds = range(first, first + int(os.environ.get("EXPLORE_SCHEDULES", default_schedules)))
    started = time.perf_counter()
    virtual = 0.0
    ran = 0
    for seed in seeds:
        if budget_seconds is not None and time.perf_counter() - started > budget_seconds:
            break
        ran += 1
        trace = Trace(seed)
        try:
            virtual += schedule(random.Random(seed), trace)  # noqa: S311 - a reproducible seed
        except (AssertionError, DeadlockError, LivelockError, RecursionError) as failure:
            steps = "\n  ".join(trace.steps[-60:])
            command = replay.format(seed=seed)
            raise ScheduleFailedError(
                f"{name}: seed {seed} broke an invariant: {type(failure).__name__}: {failure}\n"
                f"last steps of the schedule:\n  {steps}\nreplay it alone: {command}"
            ) from failure
    result = Exploration(name, ran, time.perf_counter() - started, virtual)
    EXPLORATIONS.append(result)
    return result
