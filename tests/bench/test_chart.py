"""The bench's picture: every throughput and latency row, both systems, bars to scale."""

import xml.etree.ElementTree as ET

from bench.chart import BAR, COLOURS, render_svg
from bench.report import BASELINE, SUBJECT, Measure, Report

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    """Our own picture, just drawn: trusted input."""
    return ET.fromstring(svg)  # noqa: S314


def report() -> Report:
    run = Report("event-tracker benchmark (quick)", systems=[SUBJECT, BASELINE])
    run.put("single", "ingest single POST", "events/s", SUBJECT, Measure(2000, 20.0, 50.0))
    run.put("single", "ingest single POST", "events/s", BASELINE, Measure(1000, 30.0, 80.0))
    run.put("drain", "drain / bare insert", "ratio", SUBJECT, Measure(0.8))
    return run


def test_each_row_shows_both_systems_scaled_to_the_larger() -> None:
    root = parse(render_svg(report()))
    bars = [rect for rect in root.iter(f"{SVG}rect") if rect.get("class") == "bar"]
    by_colour = {colour: [float(r.get("width", 0)) for r in bars if r.get("fill") == colour]
                 for colour in COLOURS.values()}  # fmt: skip
    # One throughput row and one latency row: ours is the longer throughput bar and the
    # shorter latency bar.
    assert by_colour[COLOURS[SUBJECT]] == [BAR, BAR * 50 / 80]
    assert by_colour[COLOURS[BASELINE]] == [BAR / 2, BAR]
    texts = " ".join(text.text or "" for text in root.iter(f"{SVG}text"))
    assert "ingest single POST  (2.00 x)" in texts
    assert "20.0 / 50.0 ms" in texts
    assert "30.0 / 80.0 ms" in texts
    assert "drain / bare insert" not in texts  # a ratio row is not a throughput


def test_a_run_without_baseline_draws_event_tracker_alone() -> None:
    run = Report("event-tracker benchmark (quick)")
    run.put("single", "ingest single POST", "events/s", SUBJECT, Measure(2000, 20.0, 50.0))
    root = parse(render_svg(run))
    fills = {rect.get("fill") for rect in root.iter(f"{SVG}rect") if rect.get("class") == "bar"}
    assert fills == {COLOURS[SUBJECT]}
