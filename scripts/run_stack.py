"""Run the whole stack locally: ingest, processor and, unless MONGODB_URL is set, SecantusDB.

RabbitMQ and Redis are the ones RABBITMQ_URL and REDIS_URL name. Ctrl-C (or SIGTERM) stops
the services first, so they drain, then the database.
"""

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from activity_contract.settings import MongoSettings, load_settings
from activity_testing.processes import SecantusServer, ServiceProcess
from ingest.settings import IngestSettings
from processor.settings import ProcessorSettings

DATA_DIR = Path(os.environ.get("LOCAL_DATA_DIR", ".local/secantus-data"))
# uvicorn exits by re-raising the stop signal once it has shut down gracefully.
CLEAN_EXITS = {0, -signal.SIGTERM, -signal.SIGINT}


def main() -> int:
    """Start everything, wait for Ctrl-C or a service exiting, then stop everything."""
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    env: dict[str, str] = {}
    with contextlib.ExitStack() as running:
        # Read like the services read it: the environment, then `.env` (the documented
        # `cp env.example .env` flow), so a configured database is never replaced.
        if load_settings(MongoSettings).mongodb_url is None:
            database = running.enter_context(SecantusServer(DATA_DIR))
            env["MONGODB_URL"] = database.url
            print(f"run: embedded SecantusDB at {database.url} (data in {DATA_DIR})", flush=True)
        services = [
            ServiceProcess("ingest", env, load_settings(IngestSettings).ingest_port),
            ServiceProcess("processor", env, load_settings(ProcessorSettings).processor_port),
        ]
        for service in services:
            running.callback(service.stop)  # stopped in reverse: processor, ingest, database
            try:
                service.start()
            except (RuntimeError, TimeoutError) as failure:
                print(f"run: {failure}", flush=True)
                return 1
        print(
            f"run: ingest at {services[0].base_url}, processor at {services[1].base_url}; "
            "Ctrl-C stops everything",
            flush=True,
        )
        while not stopping and all(service.pid is not None for service in services):
            time.sleep(0.2)
    codes = {service.name: service.stop() for service in services}
    failed = {name: code for name, code in codes.items() if code not in CLEAN_EXITS}
    print(f"run: stopped{f' (exit codes {failed})' if failed else ''}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
