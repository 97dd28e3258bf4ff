"""Machines and cores for a target event rate, from measured rates per core.

`python -m bench.sizing` prints the sizing table of docs/scaling.md. Its inputs are rates per
CPU core measured by `make bench` (bench/RESULTS.md: 1e6 / the "CPU us/event" column) and by
`python -m bench.quorum_ceiling`; pass newer figures as options and paste the new table.
"""

import argparse
import math
from dataclasses import dataclass

TARGETS = (10_000, 100_000, 1_000_000)
GROUP = 100  # events per message when ingest publishes a batch as one message


@dataclass(frozen=True)
class Inputs:
    """Measured rates per core (events or documents per second of one core)."""

    ingest_single: float  # single-event POSTs
    ingest_batch: float  # batch POSTs of GROUP events
    processor: float
    database: float  # documents inserted with insert_many, w=majority j=true
    queue_grouped: float  # events/s through one quorum queue, GROUP events per message
    queue_single: float  # events/s through one quorum queue, one event per message
    machine_cores: int
    utilisation: float  # share of each machine's cores planned busy (headroom for failover)


def cores(rate: float, per_core: float) -> float:
    """Cores needed for `rate` at `per_core`."""
    return rate / per_core


def core_text(needed: float) -> str:
    """Cores as text: one decimal below 10, so a fraction of a core does not read as 0."""
    return f"{needed:,.1f}" if needed < 10 else f"{needed:,.0f}"


def machines(needed_cores: float, inputs: Inputs, at_least: int) -> int:
    """Machines of `machine_cores` at the planned utilisation, never fewer than `at_least`."""
    usable = inputs.machine_cores * inputs.utilisation
    return max(at_least, math.ceil(needed_cores / usable))


def table(inputs: Inputs) -> str:
    """The sizing table as Markdown."""
    lines = [
        f"machines of {inputs.machine_cores} cores planned at {inputs.utilisation:.0%} CPU; "
        f"inputs per core: ingest {inputs.ingest_single:,.0f} (single) / "
        f"{inputs.ingest_batch:,.0f} (batch of {GROUP}) events/s, processor "
        f"{inputs.processor:,.0f} events/s, database {inputs.database:,.0f} documents/s; "
        f"one quorum queue {inputs.queue_grouped:,.0f} events/s grouped, "
        f"{inputs.queue_single:,.0f} single",
        "",
        "| events/s | ingest cores (single / batch) | ingest machines (single / batch) "
        "| processor cores, machines | database primary cores, shards of 3 members "
        "| quorum queues (grouped / single) |",
        "|--:|--:|--:|--:|--:|--:|",
    ]
    for rate in TARGETS:
        single, batch = cores(rate, inputs.ingest_single), cores(rate, inputs.ingest_batch)
        processor = cores(rate, inputs.processor)
        database = cores(rate, inputs.database)
        shards = machines(database, inputs, at_least=1)
        lines.append(
            f"| {rate:,} | {core_text(single)} / {core_text(batch)} "
            f"| {machines(single, inputs, 2):,} / {machines(batch, inputs, 2):,} "
            f"| {core_text(processor)}, {machines(processor, inputs, 2):,} "
            f"| {core_text(database)}, {shards:,} ({3 * shards:,} machines) "
            f"| {math.ceil(rate / inputs.queue_grouped):,} / "
            f"{math.ceil(rate / inputs.queue_single):,} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Read the inputs (defaults: bench/RESULTS.md of 2026-12-01), print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 1e6 / CPU us per event in bench/RESULTS.md (last full run, 2026-12-01): ingest 273 us
    # per single POST and 18 us per batched event, processor 70 us per event (the drain of
    # single-posted events; 34 us for batch-posted ones), SecantusDB 184 us per document.
    parser.add_argument("--ingest-single", type=float, default=3_663)
    parser.add_argument("--ingest-batch", type=float, default=55_556)
    parser.add_argument("--processor", type=float, default=14_286)
    parser.add_argument("--database", type=float, default=5_435)
    # "both events/s" of one queue with three replicas (docs/scaling.md, 2026-12-01).
    parser.add_argument("--queue-grouped", type=float, default=87_000)
    parser.add_argument("--queue-single", type=float, default=1_100)
    parser.add_argument("--machine-cores", type=int, default=16)
    parser.add_argument("--utilisation", type=float, default=0.6)
    args = parser.parse_args()
    print(table(Inputs(**vars(args))))


if __name__ == "__main__":
    main()
