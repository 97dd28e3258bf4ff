"""The one table a benchmark run prints, and the targets it checks."""

from dataclasses import dataclass, field


@dataclass
class Row:
    """One measurement: a figure with its unit and, where it applies, latency and errors."""

    name: str
    value: float | None = None
    unit: str = ""
    p50_ms: float | None = None
    p99_ms: float | None = None
    non_202: float | None = None
    cpu: str = ""  # CPU time per event of the processes doing the work


@dataclass
class Report:
    """Every row of a run, plus target verdicts."""

    title: str
    rows: list[Row] = field(default_factory=list)
    verdicts: list[tuple[str, bool | None, str]] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        """Append a row and return it."""
        self.rows.append(row)
        return row

    def target(self, name: str, met: bool | None, detail: str) -> None:
        """Record whether a target was met (None: not measured in this mode)."""
        self.verdicts.append((name, met, detail))

    def render(self) -> str:
        """The table, as fixed-width text that also reads as Markdown."""
        header = ("measurement", "value", "unit", "p50 ms", "p99 ms", "non-202", "CPU us/event")
        lines = [
            [
                row.name,
                _number(row.value),
                row.unit,
                _number(row.p50_ms, 1),
                _number(row.p99_ms, 1),
                "" if row.non_202 is None else f"{row.non_202:.2%}",
                row.cpu,
            ]
            for row in self.rows
        ]
        widths = [max(len(cells[i]) for cells in [list(header), *lines]) for i in range(7)]

        def line(cells: list[str] | tuple[str, ...]) -> str:
            padded = [
                cell.ljust(widths[i]) if i in (0, 2, 6) else cell.rjust(widths[i])
                for i, cell in enumerate(cells)
            ]
            return "| " + " | ".join(padded) + " |"

        out = [self.title, "", line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(cells) for cells in lines]
        out.append("")
        for name, met, detail in self.verdicts:
            mark = "n/a " if met is None else ("MET " if met else "MISS")
            out.append(f"  [{mark}] {name}: {detail}")
        return "\n".join(out)


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return ""
    if digits == 0 and abs(value) >= 10:
        return f"{value:,.0f}"
    return f"{value:,.{max(digits, 2) if abs(value) < 10 else digits}f}"


def cpu_note(**per_event_us: float | None) -> str:
    """`ingest 850, db 620`: CPU microseconds per event of each named process."""
    return ", ".join(f"{name} {value:,.0f}" for name, value in per_event_us.items() if value)
