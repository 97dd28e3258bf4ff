"""Tracking plans for tests: the example plan the repository ships, and small ones."""

from pathlib import Path
from typing import Any

import yaml

# The repository's example plan (tracking-plan/), five event types.
EXAMPLE_PLAN = Path(__file__).resolve().parents[3] / "tracking-plan"


def planned_event(event_type: str, metadata: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """One plan file's content; `examples` default to one empty object, which must be valid."""
    return {
        "event_type": event_type,
        "version": "1-0-0",
        "description": f"{event_type}, for a test.",
        "examples": [{}],
        "metadata": metadata,
        **fields,
    }


def write_plan(folder: Path, *events: dict[str, Any]) -> Path:
    """Write `events` to `folder`, one `<event_type>.yaml` each; returns `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for event in events:
        (folder / f"{event['event_type']}.yaml").write_text(yaml.safe_dump(event))
    return folder


# A plan of one type, `checkout`, whose metadata needs an integer `amount`.
CHECKOUT = planned_event(
    "checkout",
    {
        "type": "object",
        "required": ["amount"],
        "properties": {"amount": {"type": "integer"}, "coupon": {"type": "string"}},
    },
    examples=[{"amount": 10}],
)
