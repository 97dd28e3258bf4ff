"""Benchmark of the whole pipeline, side by side with a baseline: `python -m bench`.

`make bench` (full, 20-30 minutes), `make bench BENCH_ARGS=--quick` (a few minutes),
`make bench BASELINE=/path/to/seed-node` (also runs the Node baseline, one system after
the other). Each system gets its own RabbitMQ vhost, Redis, database and services on
loopback; everything is stopped and deleted at the end, also on Ctrl-C or SIGTERM. The
table goes to stdout, progress to stderr. See bench/README.md.
"""

import argparse
import contextlib
import os
import platform
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from pymongo.errors import PyMongoError

from bench.baseline import baseline_spec
from bench.chart import render_svg
from bench.otlp_sink import otlp_sink
from bench.phases import FULL, GROUPS, QUICK, Plan, SystemRun
from bench.report import BASELINE, SUBJECT, Measure, Report
from bench.stack import event_tracker_spec, say, system_stack

# The run's picture (bench/results/ is not committed).
CHART = Path(__file__).resolve().parent / "results" / "latest.svg"
# Issue 10, 16 and 18's targets.
SINGLE_VS_BASELINE = 1.0
BATCH_VS_BASELINE = 2.0
DRAIN_BATCH_VS_INSERT = 0.8
DRAIN_SINGLE_VS_INSERT = 0.5
MIXED_P99_MS = 50.0
E2E_P99_MS = 1000.0
INGEST_US_PER_POST = 350.0
PROCESSOR_US_PER_EVENT = 100.0
US_PER_REFUSAL = 150.0
GOOD_P99_GROWTH = 1.2
READ_P50_MS = 100.0
READ_MAX_MS = 300.0
READ_TARGET_STORED = 250_000


def fmt(value: float | None, unit: str = "") -> str:
    """A figure for a verdict line."""
    if value is None:
        return "not measured"
    return f"{value:,.2f}{unit}" if abs(value) < 10 else f"{value:,.0f}{unit}"


def judge(report: Report, plan: Plan) -> None:
    """Every target of issues 10, 16 and 18, met or missed, from the rows."""
    ours = {row.key: row.measures.get(SUBJECT, Measure()) for row in report.rows}
    theirs = {row.key: row.measures.get(BASELINE) for row in report.rows}

    def vs_baseline(key: str, factor: float, label: str) -> None:
        mine, other = ours.get(key, Measure()).value, theirs.get(key)
        if mine is None:
            report.target(label, None, "not measured")
            return
        if other is None or not other.value or mine is None:
            report.target(label, None, f"{fmt(mine, '/s')}; needs --baseline")
            return
        ratio = mine / other.value
        report.target(
            label, ratio >= factor, f"{ratio:.2f} x ({fmt(mine, '/s')} vs {fmt(other.value, '/s')})"
        )

    def at_most(key: str, field: str, bound: float, label: str, unit: str = " ms") -> None:
        measure = ours.get(key)
        value = None if measure is None else getattr(measure, field)
        met = None if value is None else value <= bound
        report.target(label, met, fmt(value, unit))

    def at_least(key: str, bound: float, label: str) -> None:
        value = ours.get(key, Measure()).value
        report.target(label, None if value is None else value >= bound, fmt(value))

    vs_baseline("single", SINGLE_VS_BASELINE, "1. single-event ingest >= 1.0 x the baseline")
    single, other = ours.get("single", Measure()), theirs.get("single")
    if other is not None and single.p99_ms is not None and other.p99_ms is not None:
        report.target(
            "1. single-event ingest p99 lower than the baseline's",
            single.p99_ms < other.p99_ms,
            f"{fmt(single.p99_ms, ' ms')} vs {fmt(other.p99_ms, ' ms')}",
        )
    vs_baseline("batch", BATCH_VS_BASELINE, "2. batch ingest >= 2 x the baseline")
    at_least(
        "drain_batch_ratio",
        DRAIN_BATCH_VS_INSERT,
        "3. drain of batch-posted events >= 0.8 x bare insert",
    )
    at_least(
        "drain_single_ratio",
        DRAIN_SINGLE_VS_INSERT,
        "3. drain of single-posted events >= 0.5 x bare insert",
    )
    at_most(
        "mixed",
        "p99_ms",
        MIXED_P99_MS,
        f"4. {plan.mixed_rate:,.0f} POSTs/s while draining: p99 <= 50 ms",
    )
    e2e = ours.get("e2e_http")
    if e2e is not None and e2e.counts:
        sent, accepted = e2e.counts["sent"], e2e.counts["accepted"]
        report.target(
            f"5. {plan.e2e_rate:,.0f} events/s for {plan.e2e_seconds:.0f} s: all accepted",
            accepted == sent,
            f"{accepted:,} of {sent:,} accepted",
        )
    at_most("e2e_stored", "p99_ms", E2E_P99_MS, "5. ... p99 of processed_at - received_at <= 1 s")
    cpu = ours.get("single", Measure()).cpu_us.get("ingest")
    report.target(
        "6. ingest CPU <= 350 us per single POST",
        None if cpu is None else cpu <= INGEST_US_PER_POST,
        fmt(cpu, " us"),
    )
    for key, how in (("drain_batch", "batch-posted"), ("drain_single", "single-posted")):
        cpu = ours.get(key, Measure()).cpu_us.get("proc")
        report.target(
            f"6. processor CPU <= 100 us per event ({how})",
            None if cpu is None else cpu <= PROCESSOR_US_PER_EVENT,
            fmt(cpu, " us"),
        )
    abuser = ours.get("abuser", Measure())
    cpu = abuser.cpu_us.get("ingest")
    report.target(
        "7. ingest CPU <= 150 us per 429",
        None if cpu is None else cpu <= US_PER_REFUSAL,
        fmt(cpu) if cpu is None else f"{fmt(cpu, ' us')} at {fmt(abuser.value, ' x 429/s')}",
    )
    alone, beside = ours.get("good_alone"), ours.get("good_with")
    if alone and beside and alone.p99_ms and beside.p99_ms is not None:
        growth = beside.p99_ms / alone.p99_ms
        report.target(
            "7. good client's p99 beside the abuser within 20 % of alone",
            growth <= GOOD_P99_GROWTH,
            f"{fmt(beside.p99_ms, ' ms')} vs {fmt(alone.p99_ms, ' ms')} ({growth:.2f} x)",
        )
    stored = plan.levels[-1]
    scale = "" if stored >= READ_TARGET_STORED else f" (quick: ~{stored // 1000}k stored, not 250k)"
    for key, whose in (("read_with", "with"), ("read_without", "without")):
        read = ours.get(key)
        if read is None or read.p50_ms is None:
            continue
        report.target(
            f"8. read page of 50, users {whose} events: p50 <= 100 ms{scale}",
            read.p50_ms <= READ_P50_MS,
            fmt(read.p50_ms, " ms"),
        )
        report.target(
            f"8. read page of 50, users {whose} events: max <= 300 ms{scale}",
            read.value is not None and read.value <= READ_MAX_MS,
            fmt(read.value, " ms"),
        )


def title(plan: Plan, systems: list[str]) -> str:
    """What ran where and when."""
    return (
        f"event-tracker benchmark ({plan.name}), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average at start {os.getloadavg()[0]:.2f}; systems: {'; '.join(systems)}"
        + (
            "; event-tracker traces on (OTLP to a sink)"
            if os.environ.get("OTEL_TRACES_EXPORTER") == "otlp"
            else ""
        )
    )


def run(
    plan: Plan,
    baseline: Path | None,
    groups: frozenset[str] = GROUPS,
    tracking_plan: Path | None = None,
) -> Report:
    """Each system in turn: event-tracker (with `tracking_plan`, if given), then the baseline."""
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        specs = [event_tracker_spec(tracking_plan)]
        if baseline is not None:
            specs.append(stack.enter_context(baseline_spec(baseline)))
        report = Report(
            title(plan, [f"{spec.name} ({spec.description})" for spec in specs]),
            systems=[spec.name for spec in specs],
        )
        for spec in specs:
            system_started = time.perf_counter()
            with system_stack(spec) as system:
                SystemRun(system, plan, report).run(groups)
            say(f"[{spec.name}] done in {time.perf_counter() - system_started:.0f} s")
    judge(report, plan)
    report.notes.append(
        "CPU us/event: CPU time each process spent in the phase per event accepted (ingest, "
        "redis) or stored (proc, db); mq is the machine's whole RabbitMQ node. "
        "ratio = event-tracker / baseline. See bench/README.md."
    )
    say(f"done in {time.perf_counter() - started:.0f} s")
    return report


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, a few minutes")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="folder of the Node baseline (api/, consumer/) to run side by side; "
        "copied to a temporary folder, never written to",
    )
    parser.add_argument(
        "--traces",
        action="store_true",
        help="run event-tracker with OpenTelemetry tracing on, exporting to a sink that "
        "keeps nothing: what tracing costs",
    )
    parser.add_argument(
        "--only",
        default=",".join(sorted(GROUPS)),
        help="comma-separated groups of phases to run: bare (publish and insert limits), "
        "ingest (ingest, drains, 500/s while draining, end to end), refusal (the 429 path), "
        "data (insert rate by stored size, reads, write path beside reads); default: all",
    )
    parser.add_argument(
        "--plan",
        type=Path,
        help="run event-tracker with this tracking plan enforced (TRACKING_PLAN_DIR); "
        "`python -m bench.plan_cost --write DIR` writes a typical one covering the bench's "
        "event types",
    )
    args = parser.parse_args()
    groups = frozenset(name.strip() for name in args.only.split(",") if name.strip())
    if not groups or not groups <= GROUPS:
        parser.error(f"--only takes some of {', '.join(sorted(GROUPS))}")
    if args.baseline is not None and not args.baseline.is_dir():
        parser.error(f"--baseline {args.baseline}: not a folder")
    if args.plan is not None and not args.plan.is_dir():
        parser.error(f"--plan {args.plan}: not a folder")
    # SIGTERM unwinds like Ctrl-C: services, servers and vhosts are stopped and deleted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with contextlib.ExitStack() as tracing:
            if args.traces:
                os.environ["OTEL_TRACES_EXPORTER"] = "otlp"
                os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = tracing.enter_context(otlp_sink())
            report = run(QUICK if args.quick else FULL, args.baseline, groups, args.plan)
    except KeyboardInterrupt:
        say("interrupted: everything started was stopped")
        sys.exit(130)
    except (RuntimeError, TimeoutError, PyMongoError) as error:  # did not start or answer
        say(f"bench failed: {error}")
        sys.exit(1)
    print(report.render(), flush=True)
    CHART.parent.mkdir(parents=True, exist_ok=True)
    CHART.write_text(render_svg(report))
    say(f"picture of the table: {CHART}")


if __name__ == "__main__":
    main()
