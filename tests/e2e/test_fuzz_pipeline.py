"""Property-based fuzzing all the way to the database: every generated event is either
refused at ingest or stored, and none is stuck in the queue.

Generated bodies reach for the edges the adversarial probe found: `NaN`/`Infinity`
literals, numbers beyond a double or 64 bits, NUL and other odd characters in keys and
ids, deep nesting, calendar-edge timestamps and client clocks, spellings of one UUID.
"""

import asyncio
import json
import math
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activity_testing.fuzzing import DERANDOMIZE, seeded
from activity_testing.processes import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

EVENTS_PER_EXAMPLE = 40

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # unbounded: beyond 64 bits too
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
keys = st.text(max_size=8)  # may hold NUL, surrogates, "$", "."
metadata = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=12,
).map(lambda value: value if isinstance(value, dict) else {"v": value})
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
edge_times = st.sampled_from(
    [
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-12:00",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "1970-01-01T00:00:00Z",
        "1700000000",
    ]
)
times = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=offsets,
    ).map(datetime.isoformat),
    edge_times,
)
event_ids = st.uuids().flatmap(
    lambda value: st.sampled_from(
        [str(value), str(value).upper(), value.hex, f"{{{value}}}", f"urn:uuid:{value}"]
    )
)


@st.composite
def events(draw: st.DrawFn) -> str:
    """One event body as raw JSON text (NaN and Infinity written as JSON5-style literals)."""
    body: dict[str, Any] = {
        "user_id": draw(st.one_of(st.text(min_size=1, max_size=20), st.just("fuzz-user"))),
        "event_type": draw(st.from_regex(r"\A[A-Za-z][A-Za-z0-9_.:-]{0,10}\Z")),
        "metadata": draw(metadata),
    }
    if draw(st.booleans()):
        body["event_id"] = draw(event_ids)
    if draw(st.booleans()):
        body["timestamp"] = draw(times)
    if draw(st.booleans()):
        body["sent_at"] = draw(times)
    return json.dumps(body, allow_nan=True)


@given(bodies=st.lists(events(), min_size=EVENTS_PER_EXAMPLE, max_size=EVENTS_PER_EXAMPLE))
@seeded
@settings(
    max_examples=4,
    derandomize=DERANDOMIZE,  # FUZZ_SEED=n: other examples (activity_testing.fuzzing)
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
async def test_every_generated_event_is_refused_or_stored_and_none_is_stuck(
    bodies: list[str],
    ingest: ServiceProcess,
    processor: ServiceProcess,
    queue_depth: Any,
    wait_until: Any,
    activities: Any,
) -> None:
    if processor.process is None:
        processor.start()
    async with httpx.AsyncClient(base_url=ingest.base_url, timeout=30) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    "/api/v1/activities", content=body, headers={"Content-Type": "application/json"}
                )
                for body in bodies
            )
        )
    accepted = []
    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code in (202, 400, 422), (response.status_code, body[:200])
        if response.status_code == 202:
            accepted.append(response.json()["event_id"])
            assert not _has_non_finite(json.loads(body)), body[:200]
    unique = {str(uuid.UUID(event_id)) for event_id in accepted}

    async def all_stored() -> bool:
        found = await activities.count_documents({"_id": {"$in": [uuid.UUID(i) for i in unique]}})
        return bool(found == len(unique))

    assert await wait_until(all_stored, within=90), "an accepted event was not stored"
    assert await wait_until(lambda: _is_zero(queue_depth()), within=60), "a message is stuck"
    assert await queue_depth(column="messages_unacknowledged") == 0


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(item) for item in value)
    return False


async def _is_zero(depth: Any) -> bool:
    return bool(await depth == 0)
