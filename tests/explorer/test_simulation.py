"""The virtual clock the explorers run on: it never hangs, it reports what would."""

import asyncio
from contextlib import suppress

import pytest

from activity_testing.simulation import (
    DeadlockError,
    LivelockError,
    VirtualClockLoop,
    run_simulated,
)


def test_a_wait_until_a_deadline_ends_at_the_deadline() -> None:
    """Timers a hair past "now" run at their time (asyncio would run them early)."""
    deadline = 55.757327000640316
    waits = 0

    async def main(loop: VirtualClockLoop) -> None:
        nonlocal waits
        await asyncio.sleep(deadline - 1e-10)
        never = asyncio.Event()
        while loop.time() < deadline:
            waits += 1
            with suppress(TimeoutError):
                await asyncio.wait_for(never.wait(), timeout=deadline - loop.time())

    assert run_simulated(main) >= deadline
    assert waits <= 2


def test_a_task_that_spins_is_a_livelock() -> None:
    async def main(loop: VirtualClockLoop) -> None:
        while True:  # noqa: ASYNC110 - the spin is the point
            await asyncio.sleep(0)

    with pytest.raises(LivelockError):
        run_simulated(main)


def test_a_task_that_waits_for_nothing_is_a_deadlock() -> None:
    async def main(loop: VirtualClockLoop) -> None:
        await asyncio.Event().wait()

    with pytest.raises(DeadlockError):
        run_simulated(main)
