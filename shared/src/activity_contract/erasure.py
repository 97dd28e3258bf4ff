"""What an erasure covers: the one rule ingest's delete and the processor's checks share.

An erasure of a user at time E covers every event of that user received before E, and
every event whose (corrected) timestamp precedes E, whenever it arrives: a late retry
cannot bring erased data back. MongoDB keeps datetimes at whole milliseconds, so E is
taken at the next millisecond boundary after the erasure: an event received a few
microseconds before it is then before E both as sent and as stored.
"""

from datetime import datetime, timedelta

_MILLISECOND = timedelta(milliseconds=1)


def erasure_time(now: datetime) -> datetime:
    """The erasure's time E: the first whole millisecond after `now`."""
    return now - timedelta(microseconds=now.microsecond % 1000) + _MILLISECOND


def erased_before(received_at: datetime, timestamp: datetime, erased_at: datetime) -> bool:
    """Whether an erasure at `erased_at` covers an event received and timed so."""
    return received_at < erased_at or timestamp < erased_at


def covered_query(user_id: str, erased_at: datetime) -> dict[str, object]:
    """The MongoDB filter of the stored events an erasure covers (`erased_before`)."""
    return {
        "user_id": user_id,
        "$or": [{"received_at": {"$lt": erased_at}}, {"timestamp": {"$lt": erased_at}}],
    }
