"""Property-based tests that replay: the same examples every run unless FUZZ_SEED is set.

What fails in CI then fails again as it is; `FUZZ_SEED=n` draws other examples, and the
same n replays them.
"""

import os
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import seed

FUZZ_SEED = os.environ.get("FUZZ_SEED")
# For `settings(derandomize=...)`: fixed examples unless a seed is given.
DERANDOMIZE = FUZZ_SEED is None

Test = TypeVar("Test", bound=Callable[..., Any])


def seeded(test: Test) -> Test:
    """The test with FUZZ_SEED as Hypothesis's seed, when it is set."""
    return seed(int(FUZZ_SEED))(test) if FUZZ_SEED else test
