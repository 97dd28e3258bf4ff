"""`make run` (scripts/run_stack.py) honours a MONGODB_URL set in `.env`."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from activity_testing.processes import TEST_REDIS_URL, free_port

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
    try:
        ready = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and stack.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{processor_port}/health/ready", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert ready is not None
        assert ready.status_code == 200, ready.text
    finally:
        stack.send_signal(signal.SIGINT)
        output, _ = stack.communicate(timeout=60)
    assert "embedded SecantusDB" not in output
    assert not (tmp_path / "data").exists()
    assert stack.returncode == 0, output
