"""What tests post: valid event bodies, and what ingest answered to each."""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


def event_payload(**overrides: Any) -> dict[str, Any]:
    """A valid `ActivityIn` body; keyword arguments replace or add fields."""
    payload: dict[str, Any] = {
        "user_id": "user-1",
        "event_type": "page_view",
        "metadata": {"path": "/home"},
    }
    payload.update(overrides)
    return payload


@dataclass
class PostOutcome:
    """What ingest answered to each posted event, by the client-chosen event id."""

    accepted: list[str] = field(default_factory=list)  # answered 202
    refused: list[str] = field(default_factory=list)  # answered 503: the client may retry
    statuses: Counter[int] = field(default_factory=Counter)  # 0 counts "no HTTP answer"
