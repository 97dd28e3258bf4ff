"""A client that hangs up while sending its body: counted as such, never as a server error.

Through the real ingest process (`python -m ingest`), its log lines in a file.
"""

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from activity_testing.processes import ServiceProcess, free_port
from activity_testing.waiting import wait_until

from .conftest import REDIS_URL

pytestmark = pytest.mark.integration

BATCH = "/api/v1/activities/batch"
DISCONNECTS = "event_tracker_ingest_client_disconnects_total"


@pytest.fixture
def ingest_log(tmp_path: Path) -> Path:
    """Where the ingest process writes its log lines."""
    return tmp_path / "ingest.log"


@pytest.fixture
def ingest(rabbit_url: str, redis_key_prefix: str, ingest_log: Path) -> Iterator[ServiceProcess]:
    """One ingest process logging JSON lines at INFO to `ingest_log`."""
    port = free_port()
    env = {
        "RABBITMQ_URL": rabbit_url,
        "REDIS_URL": REDIS_URL,
        "RATE_LIMIT": "1000000/minute",
        "RATE_LIMIT_KEY_PREFIX": redis_key_prefix,
        "INGEST_HOST": "127.0.0.1",
        "INGEST_PORT": str(port),
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
    }
    with ServiceProcess("ingest", env, port, stderr=ingest_log) as service:
        yield service


async def samples(base_url: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of the service's `/metrics`."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines the service wrote to `path` (anything else is skipped)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


async def hang_up_mid_body(port: int) -> None:
    """Announce a 100,000-byte batch, send part of it, close the socket."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {BATCH} HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n".encode()
        + b'{"events": [{"user_id": "u", "event_type": "t"}, '
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def test_a_hang_up_mid_body_is_a_disconnect_not_a_server_error(
    ingest: ServiceProcess, ingest_log: Path
) -> None:
    for _ in range(3):
        await hang_up_mid_body(ingest.port)

    async def all_counted() -> bool:
        counted = sum(
            value
            for name, labels, value in await samples(ingest.base_url)
            if name == "event_tracker_ingest_http_requests_total" and labels["handler"] == BATCH
        )
        return counted >= 3

    assert await wait_until(all_counted, 10), "the hang-ups were not counted as requests"
    measured = await samples(ingest.base_url)
    statuses = {
        labels["status"]: value
        for name, labels, value in measured
        if name == "event_tracker_ingest_http_requests_total" and labels["handler"] == BATCH
    }
    assert statuses == {"499": 3.0}
    assert [value for name, _, value in measured if name == DISCONNECTS] == [3.0]

    lines = json_lines(ingest_log)
    assert [line for line in lines if line["level"] in {"ERROR", "CRITICAL"}] == []
    hang_ups = [line for line in lines if line.get("route") == BATCH]
    assert [(line["level"], line["status"]) for line in hang_ups] == [("INFO", 499)] * 3
    assert all("exception" not in line for line in hang_ups)
