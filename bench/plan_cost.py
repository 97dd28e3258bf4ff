"""What the tracking plan costs per event: `python -m bench.plan_cost [--write DIR]`.

A plan of typical size (10 event types, 5-15 properties each, compiled once as the services
do) judges events of a planned type that meet it, events that break it, and events of an
unplanned type; beside it, what ingest pays per event anyway to parse and validate a body
(`ActivityIn` from JSON, then `to_message`). Then ingest's write path itself, in process
(read, parse, check, "publish", answer 202; the publish a stub, so only the path's own CPU
counts), with and without the plan, interleaved ABBA over rounds: a whole-stack bench run
moves by 20-40 % with the machine (bench/compare.py), far more than the check costs. CPU
time (process time), microseconds per event. `--write DIR` writes the plan itself:
`python -m bench --plan DIR` runs the services with it, and its types include the ones the
load generator posts (`bench_load`, ...), so the bench's events are really checked.
"""

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry
from starlette.types import Message

from activity_contract.events import ActivityBatchIn, ActivityIn, ActivityMessage
from activity_contract.tracking_plan import (
    Enforcement,
    TrackingPlan,
    UnplannedPolicy,
    load_plan_events,
)

# The types the ingest phases post (bench/loadgen.py, bench/phases.py), then others.
BENCH_TYPES = ("bench_load", "bench_mixed", "bench_e2e")
OTHER_TYPES = (
    "signup",
    "purchase",
    "search",
    "feature_used",
    "cart_add",
    "video_play",
    "share",
)
_EXTRA_PROPERTIES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("title", {"type": "string", "maxLength": 512}),
    ("duration_ms", {"type": "integer", "minimum": 0}),
    ("device", {"type": "string", "enum": ["web", "ios", "android"]}),
    ("locale", {"type": "string", "pattern": "^[a-z]{2}(-[A-Z]{2})?$"}),
    ("logged_in", {"type": "boolean"}),
    ("tags", {"type": "array", "items": {"type": "string", "maxLength": 32}, "maxItems": 20}),
    ("price_minor", {"type": "integer", "minimum": 0}),
    ("currency", {"type": "string", "pattern": "^[A-Z]{3}$"}),
    ("score", {"type": "number"}),
    ("campaign", {"type": "string", "maxLength": 128}),
    ("position", {"type": "integer", "minimum": 0, "maximum": 1000}),
    ("section", {"type": "string", "maxLength": 64}),
)
ITERATIONS = 100_000
WRITE_PATH_REQUESTS = 30_000
ROUNDS = 6  # ABBA: each side first as often


def planned_type(event_type: str, properties: int) -> dict[str, Any]:
    """One plan file: `path`, `referrer`, `n` (what the load generator sends) and more."""
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["path", "n"],
        "properties": {
            "path": {"type": "string", "pattern": "^/", "maxLength": 2048},
            "referrer": {"type": "string", "maxLength": 2048},
            "n": {"type": "integer", "minimum": 0},
            **dict(_EXTRA_PROPERTIES[: properties - 3]),
        },
    }
    return {
        "event_type": event_type,
        "version": "1-0-0",
        "description": f"{event_type}: a benchmark type with {properties} properties.",
        "examples": [{"path": "/page/1", "referrer": "bench", "n": 1}],
        "metadata": schema,
    }


def typical_plan() -> list[dict[str, Any]]:
    """10 event types of 5 to 15 properties (the bench's own types have 15, 12 and 9)."""
    counts = (15, 12, 9, 5, 6, 7, 8, 10, 11, 13)
    types = BENCH_TYPES + OTHER_TYPES
    return [
        planned_type(event_type, count) for event_type, count in zip(types, counts, strict=True)
    ]


def write_typical_plan(folder: Path) -> Path:
    """Write the typical plan to `folder` (created); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for event in typical_plan():
        (folder / f"{event['event_type']}.yaml").write_text(yaml.safe_dump(event, sort_keys=False))
    return folder


def per_call_us(call: Callable[[], object], iterations: int = ITERATIONS) -> float:
    """CPU microseconds per call of `call`, the best of three runs."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(iterations):
            call()
        best = min(best, time.process_time() - started)
    return best / iterations * 1e6


class _NoPublish:
    """Stands in for the publisher: the write path's own CPU is what is measured."""

    async def publish(self, messages: list[ActivityMessage]) -> None:
        return None


async def _write_path_us(plan: TrackingPlan | None, body: bytes, batch: bool) -> float:
    """CPU microseconds per event of ingest's write path, publish excluded."""
    from ingest.app import create_app
    from ingest.http.request_guards import BATCH_MAX_BYTES, SINGLE_EVENT_MAX_BYTES
    from ingest.http.write_path import WritePath, WriteRoute
    from ingest.metrics import IngestMetrics
    from ingest.plan_checks import PlanChecks
    from ingest.rate_limit import Verdict
    from ingest.settings import IngestSettings

    app = create_app(IngestSettings(_env_file=None))
    if app.write_path is None:
        raise RuntimeError("ingest has no write path")
    route = app.write_path.route_of(
        {
            "type": "http",
            "method": "POST",
            "path": "/api/v1/activities" + ("/batch" if batch else ""),
        }
    )
    if route is None:
        raise RuntimeError("no write route")
    model = ActivityBatchIn if batch else ActivityIn
    write = WriteRoute(route.route, model, BATCH_MAX_BYTES if batch else SINGLE_EVENT_MAX_BYTES)
    metrics = IngestMetrics(CollectorRegistry())
    checks = PlanChecks(plan, metrics) if plan is not None else None
    # `_accept` (read, parse, check, publish, 202) uses neither the limiter nor the keys.
    path = WritePath(
        [write],
        app.state.read_limit,
        app.state.ingest_api_keys,
        _NoPublish(),  # type: ignore[arg-type]
        metrics,
        checks,
    )
    verdict = Verdict(
        allowed=True, limit=100, remaining=99, reset_seconds=60, retry_after_seconds=0
    )
    request: Message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> Message:
        return request

    async def send(_: Message) -> None:
        return None

    requests = WRITE_PATH_REQUESTS // (100 if batch else 1)
    started = time.process_time()
    for _ in range(requests):
        await path._accept(write, receive, send, verdict)
    return (time.process_time() - started) / (requests * (100 if batch else 1)) * 1e6


def main() -> None:
    """Print the table; with --write, write the plan first."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="write the typical plan to this folder")
    args = parser.parse_args()
    folder = write_typical_plan(args.write or Path("/tmp/event-tracker-bench-plan"))  # noqa: S108
    plan = TrackingPlan(load_plan_events(folder), Enforcement.ENFORCE, UnplannedPolicy.ALLOW)
    good = {"path": "/page/7", "referrer": "bench", "n": 7}
    bad = {"path": "page/7", "referrer": "bench", "n": -1}
    body = (
        b'{"user_id":"bench-user-7","event_type":"bench_load",'
        b'"metadata":{"path":"/page/7","referrer":"bench","n":7}}'
    )
    received = datetime.now(UTC)

    def parse() -> object:
        event = ActivityIn.model_validate_json(body, context={"received_at": received})
        return event.to_message(received)

    rows = [
        ("ingest's parse + to_message of one event (no plan)", per_call_us(parse)),
        (
            "plan check, planned type, valid (15 properties)",
            per_call_us(lambda: plan.judge("bench_load", good)),
        ),
        (
            "plan check, planned type, 2 violations",
            per_call_us(lambda: plan.judge("bench_load", bad), 20_000),
        ),
        ("plan check, unplanned type (allow)", per_call_us(lambda: plan.judge("other", good))),
    ]
    print(f"plan: {folder} ({len(plan.events)} event types)")
    for label, micros in rows:
        print(f"  {label:<55} {micros:7.2f} us/event")
    check = rows[1][1]
    print(f"  valid check / parse: {check / rows[0][1]:.1%} of what ingest pays per event anyway")
    event = body.decode()
    batch_body = ('{"events":[' + ",".join([event] * 100) + "]}").encode()
    print(f"ingest write path in process, publish stubbed, {ROUNDS} rounds ABBA (median):")
    for label, payload, batch in (
        ("single POST", body, False),
        ("batch POST x100", batch_body, True),
    ):
        without: list[float] = []
        planned: list[float] = []
        for round_number in range(ROUNDS):
            order = [(None, without), (plan, planned)]
            for side, figures in order if round_number % 2 == 0 else reversed(order):
                figures.append(asyncio.run(_write_path_us(side, payload, batch)))
        no_plan, with_plan = statistics.median(without), statistics.median(planned)
        print(
            f"  {label:<17} no plan {no_plan:6.1f} us/event, with the plan {with_plan:6.1f}"
            f" us/event: {with_plan / no_plan - 1:+.1%}"
        )


if __name__ == "__main__":
    main()
