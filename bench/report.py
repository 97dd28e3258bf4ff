"""The table a benchmark run prints: each measurement with the systems side by side.

A row holds one measurement of each system that ran it (event-tracker, and the Node
baseline when given). `ratio` is event-tracker's value divided by the baseline's. The CPU
columns give, per process, the CPU microseconds it spent per event in that phase.
"""

from dataclasses import dataclass, field

SUBJECT = "event-tracker"
BASELINE = "baseline"
# Short names of the processes in the CPU columns, in this order.
PROCESSES = ("ingest", "redis", "proc", "db", "mq")
# Rows whose value is a count or already a ratio: no ratio between the systems.
NO_RATIO_UNITS = ("events", "ratio")


@dataclass
class Measure:
    """One system's figures for one row."""

    value: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_us: dict[str, float] = field(default_factory=dict)  # process -> us per event
    note: str = ""
    counts: dict[str, int] = field(default_factory=dict)  # e.g. requests sent and accepted


@dataclass
class Row:
    """One measurement, of every system that ran it."""

    key: str
    name: str
    unit: str
    measures: dict[str, Measure] = field(default_factory=dict)

    def ratio(self) -> float | None:
        """event-tracker's value / the baseline's (None unless both are there)."""
        ours, theirs = self.measures.get(SUBJECT), self.measures.get(BASELINE)
        if self.unit in NO_RATIO_UNITS:
            return None
        if ours is None or theirs is None or ours.value is None or not theirs.value:
            return None
        return ours.value / theirs.value


@dataclass
class Verdict:
    """Whether a target was met (None: not measured in this run)."""

    name: str
    met: bool | None
    detail: str


@dataclass
class Report:
    """Every row of a run, plus the target verdicts."""

    title: str
    systems: list[str] = field(default_factory=lambda: [SUBJECT])
    rows: list[Row] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def put(self, key: str, name: str, unit: str, system: str, measure: Measure) -> Measure:
        """Record `system`'s measure for row `key` (created at its first measure)."""
        row = next((row for row in self.rows if row.key == key), None)
        if row is None:
            row = Row(key, name, unit)
            self.rows.append(row)
        row.measures[system] = measure
        return measure

    def get(self, key: str, system: str = SUBJECT) -> Measure | None:
        """`system`'s measure for row `key`, if it ran."""
        row = next((row for row in self.rows if row.key == key), None)
        return None if row is None else row.measures.get(system)

    def target(self, name: str, met: bool | None, detail: str) -> None:
        """Record a target's verdict."""
        self.verdicts.append(Verdict(name, met, detail))

    def render(self) -> str:
        """The table, as fixed-width text that also reads as Markdown, then the targets."""
        both = BASELINE in self.systems
        header = ["measurement", "unit", SUBJECT]
        if both:
            header += [BASELINE, "ratio"]
        for system in self.systems:
            label = "" if not both else (" ET" if system == SUBJECT else " BL")
            header += [f"p50 ms{label}", f"p99 ms{label}"]
        for system in self.systems:
            label = "" if not both else (" ET" if system == SUBJECT else " BL")
            header += [f"CPU us/event{label}"]
        header.append("note")
        footnotes: list[str] = []
        lines = [self._cells(row, both, footnotes) for row in self.rows]
        widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
        left = {0, 1, len(header) - 1} | {
            i for i, name in enumerate(header) if name.startswith("CPU")
        }

        def line(cells: list[str]) -> str:
            padded = [
                cell.ljust(widths[i]) if i in left else cell.rjust(widths[i])
                for i, cell in enumerate(cells)
            ]
            return "| " + " | ".join(padded) + " |"

        out = [self.title, "", line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(cells) for cells in lines]
        out += ["", *footnotes, "", "Targets (event-tracker):"]
        for verdict in self.verdicts:
            mark = "n/a " if verdict.met is None else ("MET " if verdict.met else "MISS")
            out.append(f"  [{mark}] {verdict.name}: {verdict.detail}")
        if self.notes:
            out += ["", *self.notes]
        return "\n".join(out)

    def _cells(self, row: Row, both: bool, footnotes: list[str]) -> list[str]:
        empty = Measure()
        measures = [row.measures.get(system, empty) for system in self.systems]
        cells = [row.name, row.unit, number(measures[0].value)]
        if both:
            ratio = row.ratio()
            cells += [number(measures[1].value), "" if ratio is None else f"{ratio:.2f}x"]
        for measure in measures:
            cells += [number(measure.p50_ms, 1), number(measure.p99_ms, 1)]
        cells += [cpu_text(measure.cpu_us) for measure in measures]
        notes = [
            (f"{system}: " if both else "") + measure.note
            for system, measure in zip(self.systems, measures, strict=True)
            if measure.note
        ]
        if notes:
            footnotes.append(f"[{len(footnotes) + 1}] " + "; ".join(notes))
            cells.append(f"[{len(footnotes)}]")
        else:
            cells.append("")
        return cells


def number(value: float | None, digits: int = 0) -> str:
    """A figure with thousands separators; small ones with two decimals."""
    if value is None:
        return ""
    if value == float("inf"):
        return "inf"
    if digits == 0 and abs(value) >= 10:
        return f"{value:,.0f}"
    return f"{value:,.{max(digits, 2) if abs(value) < 10 else digits}f}"


def cpu_text(per_event_us: dict[str, float]) -> str:
    """`ingest 850, redis 40, mq 310`: CPU microseconds per event, known processes first."""
    names = [name for name in PROCESSES if name in per_event_us]
    names += [name for name in per_event_us if name not in PROCESSES]
    return ", ".join(
        f"{name} {per_event_us[name]:,.0f}" for name in names if per_event_us[name] >= 0.5
    )
