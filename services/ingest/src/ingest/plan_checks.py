"""The tracking plan at ingest: each request's events judged once, before publishing.

Under `enforce` a violation refuses the whole request (a batch is all or nothing) with
`422`, one detail per offending field, located like pydantic's own errors (`["body",
"events", 3, "metadata", "price"]`, type `tracking_plan.<rule>`). Under `warn` the event is
published with its violations (`plan_violations`) and stored with them. Every violation is
counted by event type, rule and outcome (docs/tracking-plan.md).
"""

from collections.abc import Sequence
from typing import Any

from fastapi.exceptions import RequestValidationError

from activity_contract.events import ActivityMessage
from activity_contract.tracking_plan import ACCEPTED, TrackingPlan, Verdict, pointer_parts
from ingest.metrics import IngestMetrics


class PlanChecks:
    """Judges a request's events by the plan; refuses or marks them (see the module)."""

    def __init__(self, plan: TrackingPlan, metrics: IngestMetrics) -> None:
        """Judge by `plan`; count in `metrics`."""
        self.plan = plan
        self._violations = metrics.plan_violations

    def apply(self, messages: Sequence[ActivityMessage], batch: bool) -> None:
        """Mark the flagged events, or raise `RequestValidationError` if one is refused."""
        verdicts: list[tuple[ActivityMessage, Verdict]] = []
        refused: list[dict[str, Any]] = []
        for index, message in enumerate(messages):
            verdict = self.plan.judge(message.event_type, message.metadata)
            if verdict is ACCEPTED:
                continue
            verdicts.append((message, verdict))
            if verdict.refuse:
                where = ("body", "events", index) if batch else ("body",)
                refused += [
                    {
                        "loc": (*where, *pointer_parts(violation.path)),
                        "msg": violation.message,
                        "type": f"tracking_plan.{violation.rule}",
                    }
                    for violation in verdict.violations
                ]
        for message, verdict in verdicts:
            outcome = "refused" if verdict.refuse else ("refused_batch" if refused else "flagged")
            label = self.plan.metric_label(message.event_type)
            for violation in verdict.violations:
                self._violations.labels(label, violation.rule, outcome).inc()
        if refused:
            raise RequestValidationError(refused)
        for message, verdict in verdicts:
            message.plan_violations = list(verdict.violations)
