"""Throughput benchmark of the whole pipeline: `python -m bench [--quick]` (or `make bench`).

Starts its own RabbitMQ vhost, its own SecantusDB (unless MONGODB_URL is set) and both
services as subprocesses on loopback, measures, stops everything and prints one table.
"""

import argparse
import asyncio
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench import bare
from bench.loadgen import percentile
from bench.report import Report, Row, cpu_note
from bench.stack import (
    INGEST_WORKERS,
    CpuMeter,
    Stack,
    bench_stack,
    loadgen,
    queue_depth,
    running,
    say,
    wait_stored,
)

E2E_EVENT_TYPE = "bench_e2e"


@dataclass(frozen=True)
class Plan:
    """Counts and durations of one run."""

    name: str
    publish_count: int
    insert_count: int
    single_seconds: float
    batch_seconds: float
    backlog_min: int
    e2e_seconds: float
    burst_seconds: float
    e2e_rate: float = 1000.0
    single_connections: int = 32
    batch_connections: int = 8
    batch_size: int = 100
    insert_concurrency: int = 1


FULL = Plan("full", 50_000, 50_000, 20, 20, 100_000, 60, 20)
QUICK = Plan("quick", 10_000, 10_000, 6, 6, 0, 10, 6)


def ingest_row(report: Report, name: str, result: dict[str, Any], cpu: str = "") -> Row:
    """A row for one load-generator run against ingest."""
    return report.add(
        Row(
            name,
            result["events_per_second"],
            "events/s",
            result["p50_ms"],
            result["p99_ms"],
            result["non_202_share"],
            cpu,
        )
    )


def drain_rate(samples: list[tuple[float, int]], before: int) -> float:
    """Events/s from the first sample that saw new documents to the last one."""
    moving = [(t, count) for t, count in samples if count > before]
    if len(moving) < 2:
        return 0.0
    (t0, c0), (t1, c1) = moving[0], moving[-1]
    return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


async def stored_latencies(stack: Stack, event_type: str) -> list[float]:
    """processed_at - received_at of every stored event of `event_type`, sorted, in ms."""
    client = stack.mongo()
    try:
        cursor = client[stack.database]["activities"].find(
            {"event_type": event_type}, {"received_at": 1, "processed_at": 1, "_id": 0}
        )
        return sorted(
            [
                (doc["processed_at"] - doc["received_at"]).total_seconds() * 1000
                async for doc in cursor
            ]
        )
    finally:
        await client.close()


def run(plan: Plan) -> Report:
    """Every phase in order; the services and the vhost are stopped whatever happens."""
    started = time.perf_counter()
    title = (
        f"event-tracker benchmark ({plan.name}), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average at start {os.getloadavg()[0]:.2f}, ingest workers {INGEST_WORKERS}"
    )
    report = Report(title)
    with bench_stack() as stack:
        say("[1/6] bare limits of this machine")
        publish = asyncio.run(bare.bare_publish_aio_pika(stack, plan.publish_count))
        report.add(Row("bare publish-with-confirm, aio-pika, 1 channel", publish, "messages/s"))
        publish_fs = asyncio.run(bare.bare_publish_faststream(stack, plan.publish_count))
        report.add(Row("bare publish-with-confirm, FastStream publisher", publish_fs, "messages/s"))
        db_meter = CpuMeter(stack.database_pid)
        insert = asyncio.run(bare.bare_insert(stack, plan.insert_count, plan.insert_concurrency))
        report.add(
            Row(
                "bare insert_many x500, w=majority j=true",
                insert,
                "documents/s",
                cpu=cpu_note(db=db_meter.per_event_us(plan.insert_count)),
            )
        )

        ingest = stack.ingest()
        processor = stack.processor()
        with running(ingest):
            say("[2/6] ingest alone (processor stopped)")
            meter = CpuMeter(ingest.process.pid if ingest.process else None)
            single = loadgen(
                ingest.port,
                "single POST",
                duration=plan.single_seconds,
                concurrency=plan.single_connections,
            )
            ingest_row(
                report,
                f"ingest single POST, {plan.single_connections} conns",
                single,
                cpu_note(ingest=meter.per_event_us(single["accepted_events"])),
            )
            meter = CpuMeter(meter.pid)
            batch = loadgen(
                ingest.port,
                f"batch POST x{plan.batch_size}",
                duration=plan.batch_seconds,
                concurrency=plan.batch_connections,
                batch=plan.batch_size,
            )
            ingest_row(
                report,
                f"ingest batch POST x{plan.batch_size}, {plan.batch_connections} conns",
                batch,
                cpu_note(ingest=meter.per_event_us(batch["accepted_events"])),
            )
            accepted = single["accepted_events"] + batch["accepted_events"]
            if accepted < plan.backlog_min:
                missing = plan.backlog_min - accepted
                topup = loadgen(
                    ingest.port,
                    "backlog top-up",
                    duration=600,
                    concurrency=plan.batch_connections,
                    batch=plan.batch_size,
                    max_requests=-(-missing // plan.batch_size),
                )
                accepted += topup["accepted_events"]
            say(f"  backlog: {asyncio.run(queue_depth(stack.rabbitmq_url)):,} messages queued")

            say(f"[3/6] processor drains a backlog of {accepted:,} events")
            with running(processor):
                meter = CpuMeter(processor.process.pid if processor.process else None)
                db_meter = CpuMeter(stack.database_pid)
                count, waited, samples = asyncio.run(
                    wait_stored(stack, accepted, within=300, label="drain", interval=0.25)
                )
                drain = drain_rate(samples, 0)
                report.add(
                    Row(
                        f"processor drain of {accepted:,} queued events",
                        drain,
                        "events/s",
                        cpu=cpu_note(
                            processor=meter.per_event_us(count),
                            db=db_meter.per_event_us(count),
                        ),
                    )
                )
                if count < accepted:
                    say(f"  drain incomplete: {count:,} of {accepted:,} after {waited:.0f} s")

                say(f"[4/6] end to end at {plan.e2e_rate:,.0f} events/s, open loop")
                e2e = loadgen(
                    ingest.port,
                    "end to end",
                    duration=plan.e2e_seconds,
                    rate=plan.e2e_rate,
                    concurrency=32,
                    event_type=E2E_EVENT_TYPE,
                )
                accepted += e2e["accepted_events"]
                ingest_row(
                    report,
                    f"end to end {plan.e2e_rate:,.0f}/s x {plan.e2e_seconds:.0f} s: HTTP",
                    e2e,
                )
                asyncio.run(wait_stored(stack, accepted, within=60, label="end to end"))
                latencies = asyncio.run(stored_latencies(stack, E2E_EVENT_TYPE))
                report.add(
                    Row(
                        "  ... processed_at - received_at",
                        len(latencies),
                        "events",
                        percentile(latencies, 0.5),
                        percentile(latencies, 0.99),
                    )
                )

                burst_rate = single["events_per_second"] / 2
                say(f"[5/6] load at half the single-POST maximum ({burst_rate:,.0f}/s), then stop")
                burst = loadgen(
                    ingest.port,
                    "half-max load",
                    duration=plan.burst_seconds,
                    rate=burst_rate,
                    concurrency=64,
                    event_type="bench_burst",
                )
                accepted += burst["accepted_events"]
                count, _, samples = asyncio.run(
                    wait_stored(stack, accepted, within=60, label="backlog", interval=0.05)
                )
                caught_up = next((t for t, c in samples if c >= accepted), None)
                recovery = None if caught_up is None else max(0.0, caught_up - burst["ended_at"])
                ingest_row(report, f"half-max load {burst_rate:,.0f}/s: HTTP", burst)
                report.add(Row("  ... backlog back to 0 after load stops", recovery, "s"))
        say("[6/6] stopping")

    single_rate = single["events_per_second"]
    report.add(
        Row("ratio batch ingest / bare publish (aio-pika)", batch["events_per_second"] / publish)
    )
    report.add(Row("ratio processor drain / bare insert", drain / insert))
    report.target(
        "batch ingest >= 0.8 x bare publish",
        batch["events_per_second"] >= 0.8 * publish,
        f"{batch['events_per_second']:,.0f} vs {publish:,.0f}",
    )
    report.target(
        "processor drain >= 0.8 x bare insert",
        drain >= 0.8 * insert,
        f"{drain:,.0f} vs {insert:,.0f}",
    )
    report.target("single ingest >= 3,000 events/s", single_rate >= 3000, f"{single_rate:,.0f}")
    report.target(
        f"HTTP p99 <= 50 ms at {plan.e2e_rate:,.0f}/s",
        e2e["p99_ms"] <= 50,
        f"{e2e['p99_ms']:.1f} ms",
    )
    report.target(
        "backlog 0 within 2 s after half-max load",
        recovery is not None and recovery <= 2,
        "never" if recovery is None else f"{recovery:.2f} s",
    )
    say(f"done in {time.perf_counter() - started:.0f} s")
    return report


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, about 2 minutes")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the services, the database and the vhost are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(QUICK if args.quick else FULL)
    print(report.render(), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
