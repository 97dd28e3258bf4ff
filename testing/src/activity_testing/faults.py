"""Seeded fault plans for the explorers: which outcome each call to a dependency gets.

Swarm testing: each seed disables some fault kinds entirely and gives the rest very
different weights, so one run explores schedules where a fault is rare, frequent, or
absent, instead of the same mild mix everywhere.
"""

import random
from collections.abc import Mapping, Sequence

from activity_testing.simulation import Trace

OK = "ok"


class FaultPlan:
    """Draws an outcome per call site from seeded, per-seed (swarm) weights."""

    def __init__(
        self,
        rng: random.Random,
        trace: Trace,
        sites: Mapping[str, Sequence[str]],
        calm_after: float | None = None,
    ) -> None:
        """Weigh each fault of each site; `calm_after` (virtual s) turns all faults off."""
        self.rng = rng
        self.trace = trace
        self.calm = False
        self.calm_after = calm_after
        self._weights: dict[str, list[tuple[str, float]]] = {}
        for site, faults in sites.items():
            # The healthy outcome keeps a real weight; each fault is off about half the time.
            weights = [(OK, rng.uniform(0.5, 4.0))]
            weights += [(fault, rng.choice([0.0, rng.uniform(0.05, 1.5)])) for fault in faults]
            self._weights[site] = weights
        self.trace.note(f"swarm weights: {self.describe()}")

    def draw(self, site: str, now: float | None = None) -> str:
        """The outcome of one call at `site`."""
        calm = self.calm_after is not None and now is not None and now >= self.calm_after
        if self.calm or calm or site not in self._weights:
            return OK
        outcomes, weights = zip(*self._weights[site], strict=True)
        outcome: str = self.rng.choices(outcomes, weights)[0]
        if outcome != OK:
            self.trace.note(f"t={now if now is not None else 0:.3f} {site}: {outcome}")
        return outcome

    def chance(self, probability: float) -> bool:
        """A seeded coin."""
        return self.rng.random() < probability

    def describe(self) -> str:
        """The non-zero fault weights, for the trace."""
        parts = []
        for site, weights in self._weights.items():
            active = [
                f"{fault}={weight:.2f}" for fault, weight in weights if weight and fault != OK
            ]
            parts.append(f"{site}[{', '.join(active) or 'none'}]")
        return " ".join(parts)
