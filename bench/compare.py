"""Two checkouts of event-tracker side by side, interleaved: `python -m bench.compare OTHER`.

A single bench run moves by 20-40 % with whatever else the machine does, more than most
changes it should judge. This runs `python -m bench --quick --only GROUPS` in this checkout
and in OTHER (a folder holding an older or newer checkout with its own synced `.venv`),
alternating ABBA over `--rounds` rounds so that drift hits both alike, and prints for every
figure the median of each side, its range, and the ratio of the medians (this / other).
Each run's own table is kept in `--out`.
"""

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.stack import say

CELL_NUMBER = re.compile(r"^-?[\d,]+(?:\.\d+)?$")
CPU_PART = re.compile(r"(?P<name>[a-z]+) (?P<value>[\d,]+)")

Figures = dict[str, float]


def read_table(text: str) -> Figures:
    """`row name / value` and `row name / CPU <process>` figures of one bench table."""
    figures: Figures = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or len(cells) < 6 or not CELL_NUMBER.match(cells[2]):
            continue
        name = cells[0].lstrip(". ")
        figures[f"{name} / {cells[1]}"] = float(cells[2].replace(",", ""))
        for part in CPU_PART.finditer(cells[5]):
            figures[f"{name} / CPU us, {part['name']}"] = float(part["value"].replace(",", ""))
    return figures


def run_once(checkout: Path, groups: str, out: Path) -> Figures:
    """One quick bench run in `checkout` with its own interpreter; its table kept in `out`."""
    python = checkout / ".venv" / "bin" / "python"
    if not python.exists():
        sys.exit(f"{python} not found: run `uv sync --all-packages --frozen` in {checkout}")
    command = [str(python), "-m", "bench", "--quick", "--only", groups]
    with out.open("w") as table:
        # The other checkout's own interpreter and bench, with fixed arguments.
        finished = subprocess.run(command, cwd=checkout, stdout=table, check=False)  # noqa: S603
    if finished.returncode != 0:
        sys.exit(f"bench failed in {checkout} (exit {finished.returncode}); table in {out}")
    return read_table(out.read_text())


def summary(values: list[float]) -> str:
    """`median [low-high]` of one side's runs."""
    median = statistics.median(values)
    return f"{median:,.2f} [{min(values):,.2f}-{max(values):,.2f}]"


def render(this: list[Figures], other: list[Figures], labels: tuple[str, str]) -> str:
    """One line per figure both sides measured in every run: medians, ranges, ratio."""
    keys = [key for key in this[0] if all(key in run for run in [*this, *other])]
    width = max(len(key) for key in keys)
    lines = [f"{'figure'.ljust(width)} | {labels[0]:>28} | {labels[1]:>28} | ratio"]
    for key in keys:
        mine = [run[key] for run in this]
        theirs = [run[key] for run in other]
        base = statistics.median(theirs)
        ratio = f"{statistics.median(mine) / base:.2f}" if base else "-"
        lines.append(f"{key.ljust(width)} | {summary(mine):>28} | {summary(theirs):>28} | {ratio}")
    return "\n".join(lines)


def main() -> None:
    """Run both checkouts in turn and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="folder of the other checkout")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side (default 3)")
    parser.add_argument("--only", default="bare,ingest,refusal", help="bench groups to run")
    parser.add_argument("--out", type=Path, help="folder for each run's table")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-compare-"))
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[Path, list[Figures]] = {here: [], args.other.resolve(): []}
    sides = list(runs)
    for round_number in range(args.rounds):
        order = sides if round_number % 2 == 0 else sides[::-1]
        for side in order:
            label = "this" if side == here else "other"
            say(f"round {round_number + 1}/{args.rounds}: {label} ({side})")
            table = out / f"{label}-{round_number + 1}.txt"
            runs[side].append(run_once(side, args.only, table))
    print(f"this = {here}, other = {sides[1]}; {args.rounds} runs each, ABBA; tables in {out}")
    print(render(runs[here], runs[sides[1]], ("this", "other")))


if __name__ == "__main__":
    main()
