"""The run's table as a picture: throughput and latency, event-tracker beside the baseline.

An SVG (no plotting library): one row per measurement, each system's bar scaled to the
larger of the two in that row, with its figure and the ratio; latency rows show p50 and p99.
`python -m bench` writes it to bench/results/latest.svg.
"""

from html import escape

from bench.report import BASELINE, SUBJECT, Measure, Report, number

COLOURS = {SUBJECT: "#2563eb", BASELINE: "#9ca3af"}
RATE_UNITS = ("events/s", "429/s", "messages/s", "documents/s")
WIDTH, LABEL, BAR, ROW = 980, 430, 420, 34


def _bars(title: str, lines: list[tuple[str, dict[str, tuple[float, str]]]], top: int) -> list[str]:
    """A titled block of rows; each row maps system -> (value, text) and scales to its max."""
    out = [f'<text x="10" y="{top + 18}" class="h">{escape(title)}</text>']
    y = top + 30
    for name, values in lines:
        largest = max(value for value, _ in values.values()) or 1.0
        out.append(f'<text x="10" y="{y + 14}" class="l">{escape(name)}</text>')
        for index, (system, (value, text)) in enumerate(values.items()):
            width = max(1.0, BAR * value / largest)
            bar_y = y + index * 14
            out.append(
                f'<rect class="bar" x="{LABEL}" y="{bar_y}" width="{width:.1f}" height="12" '
                f'fill="{COLOURS[system]}"/>'
                f'<text x="{LABEL + width + 6:.1f}" y="{bar_y + 10}" class="v">'
                f"{escape(text)}</text>"
            )
        y += ROW
    return out


def render_svg(report: Report) -> str:
    """The picture of `report`'s throughput and latency rows."""
    rates: list[tuple[str, dict[str, tuple[float, str]]]] = []
    latencies: list[tuple[str, dict[str, tuple[float, str]]]] = []
    for row in report.rows:
        measures = {s: m for s, m in row.measures.items() if s in COLOURS}
        if row.unit in RATE_UNITS and all(m.value for m in measures.values()):
            ratio = row.ratio()
            suffix = f"  ({ratio:.2f} x)" if ratio is not None else ""
            rates.append(
                (
                    f"{row.name}{suffix}",
                    {
                        s: (m.value or 0.0, f"{number(m.value)} {row.unit}")
                        for s, m in measures.items()
                    },
                )
            )
        if all(m.p99_ms is not None for m in measures.values()):
            latencies.append(
                (f"{row.name}, p50 / p99", {s: _latency(m) for s, m in measures.items()})
            )
    legend = [
        f'<rect x="{LABEL + i * 170}" y="8" width="12" height="12" fill="{COLOURS[s]}"/>'
        f'<text x="{LABEL + 18 + i * 170}" y="18" class="l">{escape(s)}</text>'
        for i, s in enumerate(s for s in report.systems if s in COLOURS)
    ]
    body = _bars("Throughput (longer is better)", rates, 24)
    latency_top = 24 + 30 + ROW * len(rates) + 10
    body += _bars(
        "Latency, p99 bar with p50 / p99 figures (shorter is better)", latencies, latency_top
    )
    height = latency_top + 30 + ROW * len(latencies) + 10
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">',
            "<style>.h{font-size:15px;font-weight:bold}.l{font-size:12px}.v{font-size:11px}</style>",
            f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
            f'<text x="10" y="18" class="l">{escape(report.title[:70])}</text>',
            *legend,
            *body,
            "</svg>",
        ]
    )


def _latency(measure: Measure) -> tuple[float, str]:
    return measure.p99_ms or 0.0, f"{number(measure.p50_ms, 1)} / {number(measure.p99_ms, 1)} ms"
