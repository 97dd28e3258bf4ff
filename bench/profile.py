"""Where a service spends its CPU under load: `python -m bench.profile {ingest,processor}`.

Starts the same stack as the benchmark (own vhost, own SecantusDB, services on loopback),
loads one service, samples it with py-spy (needs ptrace: root, or
`kernel.yama.ptrace_scope=0`) and prints the functions holding the most samples,
inclusive (with what they call) and self. The raw samples stay in `--out`.

- ingest: single-event POSTs, closed loop, 64 connections, processor stopped;
- processor: drains a backlog of `--events` (posted first, `--batch` per request).
"""

import argparse
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from activity_testing.processes import venv_script
from bench.stack import (
    event_tracker_spec,
    loadgen,
    running,
    say,
    system_stack,
    wait_stored,
)

SAMPLE_RATE_HZ = 200
FRAME = re.compile(r"(?P<function>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    """`function (package/module.py)` from a py-spy raw frame."""
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match["file"].split("site-packages/")[-1]
    return f"{match['function']} ({path.split('/src/')[-1]})"


def summarize(raw: Path, top: int) -> str:
    """Inclusive and self shares of the `top` functions in py-spy's raw (collapsed) output."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        names = [frame_name(frame) for frame in stack.split(";")]
        total += samples
        for name in set(names):
            inclusive[name] += samples
        own[names[-1]] += samples
    lines = [f"{total:,} samples", "", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top // 2)]
    return "\n".join(lines)


def record(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` and its worker processes for `seconds`, into `out`."""
    command = [
        venv_script("py-spy"),  # beside this interpreter, or on PATH
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--duration",
        str(int(seconds)),
        "--rate",
        str(SAMPLE_RATE_HZ),
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)  # noqa: S603 - fixed tool


def profile_ingest(seconds: float, out: Path) -> None:
    """Single-event POSTs at the maximum rate while py-spy samples ingest."""
    with system_stack(event_tracker_spec()) as stack, running(stack.ingest()) as ingest:
        assert ingest.pid is not None  # noqa: S101 - started by `running`
        spy = record(ingest.pid, seconds, out)
        meter = stack.meter(ingest=ingest)
        result = loadgen(ingest.port, "profile ingest", duration=seconds + 2, concurrency=64)
        spy.wait()
        cpu = meter.per_event_us(result["accepted_events"]).get("ingest", 0.0)
        say(f"  {result['events_per_second']:,.0f} events/s under py-spy, CPU {cpu:,.0f} us/event")


def profile_processor(seconds: float, out: Path, events: int, batch: int) -> None:
    """A backlog of `events`, posted `batch` per request, drained while py-spy samples."""
    with system_stack(event_tracker_spec()) as stack:
        with running(stack.ingest()) as ingest:
            posted = loadgen(
                ingest.port,
                "backlog",
                duration=600,
                concurrency=8 if batch > 1 else 64,
                batch=batch,
                max_requests=-(-events // batch),
            )
        with running(stack.processor()) as processor:
            assert processor.pid is not None  # noqa: S101 - started by `running`
            spy = record(processor.pid, seconds, out)
            meter = stack.meter(proc=processor)
            samples = wait_stored(
                processor, stack.spec.stored_metric, posted["accepted_events"], 300, "drain"
            )
            spy.wait()
            count = int(samples[-1][1])
            cpu = meter.per_event_us(count).get("proc", 0.0)
            waited = samples[-1][0] - samples[0][0]
            say(f"  {count:,} stored in {waited:.1f} s under py-spy, CPU {cpu:,.0f} us/event")


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", choices=["ingest", "processor"])
    parser.add_argument("--seconds", type=float, default=12, help="sampling time")
    parser.add_argument("--events", type=int, default=30_000, help="processor backlog")
    parser.add_argument("--batch", type=int, default=100, help="events per request of the backlog")
    parser.add_argument("--top", type=int, default=60, help="functions to list")
    parser.add_argument("--out", type=Path, help="raw samples (default: in the temp folder)")
    args = parser.parse_args()
    args.out = args.out or Path(tempfile.gettempdir()) / f"event-tracker-{args.service}.pyspy"
    if args.service == "ingest":
        profile_ingest(args.seconds, args.out)
    else:
        profile_processor(args.seconds, args.out, args.events, args.batch)
    if not args.out.exists():
        sys.exit(f"py-spy wrote no samples to {args.out} (is ptrace allowed?)")
    print(summarize(args.out, args.top))


if __name__ == "__main__":
    main()
