"""Request ids, metrics and readiness across both services, as real processes."""

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from activity_testing.events import event_payload
from activity_testing.processes import ServiceFactory, ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

READ_KEY = "e2e-read-key"


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines a service wrote to `path` (anything else is skipped)."""
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


async def test_request_id_reaches_processor_logs_and_metrics_count_it(
    stack_env: dict[str, str], ingest_with: ServiceFactory, tmp_path: Path, wait_for_count: Any
) -> None:
    ingest_log, processor_log = tmp_path / "ingest.log", tmp_path / "processor.log"
    logging_env = {"LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG"}
    ingest = ingest_with(
        {**logging_env, "LOG_LEVEL": "INFO", "READ_API_KEYS": READ_KEY}, stderr=ingest_log
    )
    processor = ServiceProcess(
        "processor",
        {**stack_env, **logging_env},
        int(stack_env["PROCESSOR_PORT"]),
        stderr=processor_log,
    )
    with ingest, processor:
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(
                f"{ingest.base_url}/api/v1/activities",
                json=event_payload(user_id="carol", metadata={"secret": "s3cr3t"}),
                headers={"X-Request-ID": "e2e-request-42"},
            )
            assert response.status_code == 202, response.text
            assert response.headers["X-Request-ID"] == "e2e-request-42"
            event_id = response.json()["event_id"]
            assert await wait_for_count(1) == 1

            page = await http.get(
                f"{ingest.base_url}/api/v1/users/carol/activities",
                headers={"Authorization": f"Bearer {READ_KEY}"},
            )
            assert page.status_code == 200, page.text
            assert [item["event_id"] for item in page.json()["items"]] == [event_id]

            ready = await http.get(f"{processor.base_url}/health/ready")
            assert ready.status_code == 200
            assert ready.json()["checks"] == {"broker": "up", "mongodb": "up", "consumer": "up"}
            ingest_ready = await http.get(f"{ingest.base_url}/health/ready")
            assert ingest_ready.json()["checks"] == {
                "broker": "up",
                "queue": "up",
                "redis": "up",
                "mongodb": "up",
            }

            metrics = (await http.get(f"{processor.base_url}/metrics")).text
            assert "event_tracker_processor_events_persisted_total 1.0" in metrics
            assert "event_tracker_processor_end_to_end_latency_seconds_count 1.0" in metrics
            ingest_metrics = (await http.get(f"{ingest.base_url}/metrics")).text
            assert "event_tracker_ingest_events_published_total 1.0" in ingest_metrics
            assert "carol" not in metrics + ingest_metrics

    stored = [
        line
        for line in json_lines(processor_log)
        if line["message"] == "event stored" and line.get("event_id") == event_id
    ]
    assert len(stored) == 1
    assert stored[0]["request_id"] == "e2e-request-42"
    assert stored[0]["logger"] == "processor.handlers"

    access = [
        line
        for line in json_lines(ingest_log)
        if line["message"] == "http request" and line.get("request_id") == "e2e-request-42"
    ]
    assert len(access) == 1
    assert access[0]["level"] == "INFO"
    assert access[0]["route"] == "/api/v1/activities"
    assert access[0]["status"] == 202
    # Metadata may hold personal data: never in ingest's INFO logs.
    assert "s3cr3t" not in ingest_log.read_text()


async def test_ingest_workers_each_log_and_publish(
    ingest_with: ServiceFactory, tmp_path: Path, processor: ServiceProcess, wait_for_count: Any
) -> None:
    """With INGEST_WORKERS=2 every worker sets up LOG_FORMAT itself and serves requests."""
    ingest_log = tmp_path / "ingest.log"
    ingest = ingest_with(
        {"LOG_FORMAT": "json", "LOG_LEVEL": "INFO", "INGEST_WORKERS": "2"}, stderr=ingest_log
    )
    processor.start()
    with ingest:
        async with httpx.AsyncClient(timeout=30) as http:
            for _ in range(40):
                response = await http.post(
                    f"{ingest.base_url}/api/v1/activities",
                    json=event_payload(),
                    headers={"Connection": "close"},  # new connections spread over workers
                )
                assert response.status_code == 202, response.text
        assert await wait_for_count(40) == 40

    lines = json_lines(ingest_log)
    started = {line["message"] for line in lines if line["message"].startswith("Started server")}
    assert len(started) == 2  # one line per worker process, in JSON
    accesses = [line for line in lines if line["message"] == "http request"]
    assert sum(line["status"] == 202 for line in accesses) == 40
