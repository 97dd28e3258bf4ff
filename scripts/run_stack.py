"""Run the whole stack locally: ingest, processor and, unless MONGODB_URL is set, SecantusDB.

RabbitMQ and Redis are the ones RABBITMQ_URL and REDIS_URL name. Ctrl-C (or SIGTERM) stops
the services first, so they drain, then the database.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from activity_contract.settings import MongoSettings, load_settings
from activity_testing.processes import SecantusServer

DATA_DIR = Path(os.environ.get("LOCAL_DATA_DIR", ".local/secantus-data"))
SERVICES = ("ingest", "processor")


def main() -> int:
    """Start everything, wait for Ctrl-C or a service exiting, then stop everything."""
    env = dict(os.environ)
    database: SecantusServer | None = None
    # Read like the services read it: the environment, then `.env` (the documented
    # `cp env.example .env` flow), so a configured database is never replaced.
    if load_settings(MongoSettings).mongodb_url is None:
        database = SecantusServer(DATA_DIR).start()
        env["MONGODB_URL"] = database.url
        print(f"run: embedded SecantusDB at {database.url} (data in {DATA_DIR})", flush=True)
    children = [
        subprocess.Popen([sys.executable, "-m", name], env=env, stdin=subprocess.DEVNULL)
        for name in SERVICES
    ]
    print(
        f"run: ingest on port {env.get('INGEST_PORT', '8000')}, processor on port "
        f"{env.get('PROCESSOR_PORT', '8001')}; Ctrl-C stops everything",
        flush=True,
    )
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    codes = [child.wait() for child in children]
    if database is not None:
        database.stop()
    # uvicorn exits by re-raising the stop signal once it has shut down gracefully.
    clean = {0, -signal.SIGTERM, -signal.SIGINT}
    failed = {name: code for name, code in zip(SERVICES, codes, strict=True) if code not in clean}
    print(f"run: stopped{f' (exit codes {failed})' if failed else ''}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
