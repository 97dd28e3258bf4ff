"""Where and how events are stored (design §7): names both services share.

The processor creates the collection's indexes; ingest reads through them. Plain
constants only, so the contract stays free of any database driver.
"""

ACTIVITIES_COLLECTION = "activities"
# One document per erased user: `_id` = user id, `erased_at` = when (design §3.3a). Events of
# that user received before `erased_at` are deleted and never stored again.
ERASURES_COLLECTION = "erasures"

# Serves the read API: one user's events, newest first, ties broken by event id.
USER_TIMELINE_INDEX = "user_timeline"
USER_TIMELINE_KEYS: tuple[tuple[str, int], ...] = (("user_id", 1), ("timestamp", -1), ("_id", -1))

EVENT_TYPE_INDEX = "type_timestamp"
EVENT_TYPE_KEYS: tuple[tuple[str, int], ...] = (("event_type", 1), ("timestamp", -1))

# TTL index on `timestamp`, present only while RETENTION_DAYS > 0.
RETENTION_INDEX = "timestamp_ttl"
RETENTION_KEYS: tuple[tuple[str, int], ...] = (("timestamp", 1),)
SECONDS_PER_DAY = 86_400
