"""Run the ingest service: `python -m ingest` (or `event-tracker-ingest`)."""

import uvicorn

from activity_contract.logs import configure_logging
from activity_contract.settings import load_settings
from ingest.app import create_app
from ingest.settings import IngestSettings

GRACEFUL_SHUTDOWN_SECONDS = 10


def main() -> None:
    """Serve the ingest app on INGEST_HOST:INGEST_PORT until SIGTERM or Ctrl-C."""
    settings = load_settings(IngestSettings)
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.ingest_host,
        port=settings.ingest_port,
        log_config=None,
        access_log=False,
        # X-Forwarded-For is judged by TRUSTED_PROXIES alone (ingest.client_ip); uvicorn's
        # own handling would rewrite the peer address first, trusting 127.0.0.1.
        proxy_headers=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


if __name__ == "__main__":
    main()
