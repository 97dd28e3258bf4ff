"""`make run` (scripts/run_stack.py) honours a MONGODB_URL set in `.env`."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from activity_testing.processes import TEST_REDIS_URL, free_port
from activity_testing.waiting import wait_until_sync

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_run_uses_the_database_named_in_dot_env(
    tmp_path: Path, rabbit_url: str, mongo_server_url: str, mongo_database: str
) -> None:
    ingest_port, processor_port = free_port(), free_port()
    (tmp_path / ".env").write_text(
        f"MONGODB_URL={mongo_server_url}\n"
        f"MONGODB_DATABASE={mongo_database}\n"
        f"RABBITMQ_URL={rabbit_url}\n"
        f"REDIS_URL={TEST_REDIS_URL}\n"
        f"INGEST_PORT={ingest_port}\nPROCESSOR_PORT={processor_port}\n"
        "INGEST_HOST=127.0.0.1\nPROCESSOR_HOST=127.0.0.1\nLOG_LEVEL=WARNING\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "RABBITMQ_"))}
    stack = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "run_stack.py")],
        cwd=tmp_path,
        env={**env, "LOCAL_DATA_DIR": str(tmp_path / "data")},
        stdout=subprocess.PIPE,
        text=True,
    )
    answers: list[httpx.Response] = []

    def ready_or_exited() -> bool:
        if stack.poll() is not None:
            return True
        try:
            answers.append(httpx.get(f"http://127.0.0.1:{processor_port}/health/ready", timeout=2))
        except httpx.TransportError:
            return False
        return answers[-1].status_code == 200

    try:
        wait_until_sync(ready_or_exited, within=60)
        assert answers, "the processor never answered"
        assert answers[-1].status_code == 200, answers[-1].text
    finally:
        stack.send_signal(signal.SIGINT)
        output, _ = stack.communicate(timeout=60)
    assert "embedded SecantusDB" not in output
    assert not (tmp_path / "data").exists()
    assert stack.returncode == 0, output
