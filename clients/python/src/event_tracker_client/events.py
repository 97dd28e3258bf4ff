"""Events as the client queues them: an id and a time chosen here, the JSON to send."""

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class QueuedEvent:
    """One tracked event: its id, and its compact JSON object without `sent_at`."""

    event_id: str
    body: str

    @property
    def size(self) -> int:
        """Its size in a batch body, `sent_at` and the separator included (about)."""
        return len(self.body.encode()) + 48


def rfc3339(moment: datetime) -> str:
    """`moment` as the server reads it: RFC 3339 with an offset (naive times are UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def new_event(
    user_id: str,
    event_type: str,
    metadata: Mapping[str, Any] | None,
    timestamp: datetime | None,
) -> QueuedEvent:
    """Stamp an event with a fresh id and (unless given) the time now, and encode it.

    Raises `TypeError`/`ValueError` at once for what JSON cannot hold (NaN, sets, ...):
    such an event could never be sent.
    """
    if not isinstance(user_id, str) or not isinstance(event_type, str):
        raise TypeError("user_id and event_type must be strings")
    event_id = str(uuid.uuid4())
    event = {
        "event_id": event_id,
        "user_id": user_id,
        "event_type": event_type,
        "timestamp": rfc3339(timestamp or datetime.now(UTC)),
        "metadata": dict(metadata or {}),
    }
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return QueuedEvent(event_id, body)


def batch_body(events: Sequence[QueuedEvent], sent_at: datetime) -> bytes:
    """The `POST /api/v1/activities/batch` body, every event carrying `sent_at`."""
    stamp = f',"sent_at":"{rfc3339(sent_at)}"}}'
    return ('{"events":[' + ",".join(event.body[:-1] + stamp for event in events) + "]}").encode()
