"""The dashboard's panels on real data, as a picture: `uv run python scripts/dashboard_preview.py`.

Grafana cannot run on the machines this project is built on, so this draws the panels of
deploy/observability/grafana/dashboards/event-tracker.json itself, from a real Prometheus
(Debian's binary, next to promtool: scripts/promtool.sh fetches both) scraping a real stack:
a private RabbitMQ node with its exporter, SecantusDB, Redis, ingest and processor. For
`--seconds` it sends single and batch events, a few over the rate limit and a few poison
messages, and stops the processor for a while so a backlog builds and drains. Then it asks
Prometheus for every panel's queries over the run and renders them with headless Chromium
to `--out` (docs/dashboard.png). Everything started is stopped and deleted at the end.
"""

import argparse
import asyncio
import contextlib
import html
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx

from activity_contract.topology import ACTIVITY_QUEUE
from activity_testing.browser import CHROMIUM_FLAGS
from activity_testing.events import event_payload
from activity_testing.processes import RedisServer, SecantusServer, ServiceProcess, free_port
from activity_testing.rabbit_nodes import RabbitCluster

ROOT = Path(__file__).resolve().parents[1]
OBSERVABILITY = ROOT / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "event-tracker.json"
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")
STEP_SECONDS = 5


def prometheus_binary() -> str:
    """Debian's prometheus, from PATH or where scripts/promtool.sh put it."""
    found = shutil.which("prometheus") or str(ROOT / ".local" / "tools" / "prometheus")
    if not Path(found).exists():
        subprocess.run([str(ROOT / "scripts" / "promtool.sh")], check=True)
    return found


@contextlib.contextmanager
def prometheus(folder: Path, targets: dict[str, str]) -> Iterator[str]:
    """Prometheus scraping `targets` (job -> host:port) every 2 s, with the alert rules."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "rule_files": [str(OBSERVABILITY / "alerts.yml")],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ],
    }
    (folder / "prometheus.yml").write_text(json.dumps(config))
    process = subprocess.Popen(
        [
            prometheus_binary(),
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "prometheus.log").open("wb"),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)


async def traffic(ingest: str, rabbit_url: str, processor: ServiceProcess, seconds: float) -> None:
    """Events for `seconds`: singles, batches, a burst over the limit, poison; a pause."""
    started = time.monotonic()
    paused = False
    async with httpx.AsyncClient(base_url=ingest, timeout=10) as http:
        connection = await aio_pika.connect(rabbit_url)
        async with connection:
            channel = await connection.channel()
            while (elapsed := time.monotonic() - started) < seconds:
                await asyncio.gather(
                    *(http.post("/api/v1/activities", json=event_payload()) for _ in range(20)),
                    http.post("/api/v1/activities/batch", json={"events": [event_payload()] * 50}),
                )
                if int(elapsed) % 15 == 0:
                    await channel.default_exchange.publish(
                        aio_pika.Message(b"not json"), routing_key=ACTIVITY_QUEUE
                    )
                if seconds * 0.4 < elapsed < seconds * 0.6 and not paused:
                    processor.stop()
                    paused = True
                if elapsed >= seconds * 0.6 and paused:
                    processor.start()
                    paused = False
                await asyncio.sleep(0.2)


def query_range(prometheus_url: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    """The series of `expr` over the run."""
    answer = httpx.get(
        f"{prometheus_url}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": STEP_SECONDS},
        timeout=30,
    ).json()
    result: list[dict[str, Any]] = answer.get("data", {}).get("result", [])
    return result


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's `{{label}}` legend filled in."""
    for name, value in labels.items():
        template = template.replace("{{" + name + "}}", value)
    return template


def panel_svg(series: list[tuple[str, list[tuple[float, float]]]], start: float, end: float) -> str:
    """Lines of every series on a shared scale, with a legend."""
    width, height = 540, 190
    points = [value for _, values in series for _, value in values]
    top = max([max(points, default=0.0), 1e-9]) * 1.1
    lines = []
    for index, (name, values) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        path = " ".join(
            f"{(t - start) / (end - start) * width:.1f},{height - v / top * height:.1f}"
            for t, v in values
        )
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>'
        )
        lines.append(
            f'<span class="key" style="color:{colour}">&#9632; {html.escape(name[:60])}</span>'
        )
    svg = [line for line in lines if line.startswith("<polyline")]
    keys = [line for line in lines if line.startswith("<span")]
    return (
        f'<div class="max">max {top / 1.1:,.3g}</div>'
        f'<svg width="100%" viewBox="0 0 {width} {height}">{"".join(svg)}'
        f'<line x1="0" y1="{height}" x2="{width}" y2="{height}" stroke="#ccc"/></svg>'
        f'<div class="keys">{"".join(keys) or "no data"}</div>'
    )


def render(prometheus_url: str, start: float, end: float, out: Path, folder: Path) -> None:
    """Every panel of the dashboard from Prometheus, to a PNG through headless Chromium."""
    dashboard = json.loads(DASHBOARD.read_text())
    cells = []
    for panel in dashboard["panels"]:
        series = []
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "30s")
            for result in query_range(prometheus_url, expr, start, end):
                values = [
                    (float(t), float(v)) for t, v in result["values"] if v not in ("NaN", "+Inf")
                ]
                series.append((legend(target["legendFormat"], result["metric"]), values))
        cells.append(
            f'<div class="panel"><h2>{html.escape(panel["title"])}</h2>'
            f'<div class="unit">{html.escape(panel["description"])}</div>'
            f"{panel_svg(series, start, end)}</div>"
        )
    page = folder / "dashboard.html"
    page.write_text(
        "<html><head><style>body{font-family:sans-serif;margin:12px;background:#f4f5f7}"
        ".grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:10px}"
        ".panel{background:white;border:1px solid #ddd;padding:8px}"
        "h1{font-size:18px}h2{font-size:14px;margin:0}.unit,.max{font-size:11px;color:#666}"
        ".keys{font-size:11px;display:flex;flex-wrap:wrap}.key{margin-right:10px}</style>"
        "</head><body>"
        f"<h1>{html.escape(dashboard['title'])}: preview of the Grafana dashboard on "
        f"{(end - start) / 60:.0f} minutes of real data</h1>"
        f'<div class="grid">{"".join(cells)}</div></body></html>'
    )
    chromium = shutil.which("chromium") or "chromium"
    subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={folder / 'chromium'}",
            f"--screenshot={out}",
            "--window-size=1250,1600",
            f"file://{page}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def main() -> None:
    """Start everything, send traffic, render, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="event-tracker-dashboard-"))
    rabbit_exporter = free_port()
    conf = (OBSERVABILITY / "rabbitmq-prometheus.conf").read_text().splitlines()
    (folder / "rabbit").mkdir()
    node = RabbitCluster(
        folder / "rabbit",
        size=1,
        plugins=["rabbitmq_prometheus"],
        config_lines=[f"prometheus.tcp.port = {rabbit_exporter}", *conf],
    )
    try:
        node.start()
        rabbit_url = f"amqp://guest:guest@127.0.0.1:{node.nodes[0].amqp_port}/"
        with SecantusServer(folder / "db") as database, RedisServer() as redis:
            ports = {"ingest": free_port(), "processor": free_port()}
            env = {
                **os.environ,
                "RABBITMQ_URL": rabbit_url,
                "MONGODB_URL": database.url,
                "REDIS_URL": redis.url,
                "RATE_LIMIT": "20/second",
                "INGEST_PORT": str(ports["ingest"]),
                "PROCESSOR_PORT": str(ports["processor"]),
                "LOG_LEVEL": "WARNING",
            }
            ingest = ServiceProcess("ingest", env, ports["ingest"])
            processor = ServiceProcess("processor", env, ports["processor"])
            with ingest, processor:
                targets = {
                    "event-tracker-ingest": f"127.0.0.1:{ports['ingest']}",
                    "event-tracker-processor": f"127.0.0.1:{ports['processor']}",
                    "rabbitmq": f"127.0.0.1:{rabbit_exporter}",
                }
                with prometheus(folder, targets) as prometheus_url:
                    start = time.time()
                    asyncio.run(traffic(ingest.base_url, rabbit_url, processor, args.seconds))
                    time.sleep(6)  # the last scrapes
                    render(prometheus_url, start, time.time(), args.out, folder)
    finally:
        node.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"dashboard preview: {args.out}")


if __name__ == "__main__":
    main()
