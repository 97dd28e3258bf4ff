"""Waiting on conditions, never on the clock alone."""

import asyncio
import inspect
import time
from collections.abc import Callable

POLL_SECONDS = 0.2


async def wait_until(
    condition: Callable[[], object], within: float = 60.0, interval: float = POLL_SECONDS
) -> bool:
    """Poll `condition` (sync or async) every `interval` s until it holds or `within` s pass.

    Returns whether it held; the caller asserts, with a message that says what did not.
    """
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


def wait_until_sync(
    condition: Callable[[], object], within: float = 60.0, interval: float = POLL_SECONDS
) -> bool:
    """`wait_until` for code without an event loop: blocks the thread between polls."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True
