"""Run the ingest service: `python -m ingest` (or `event-tracker-ingest`)."""

import functools

import uvicorn
from fastapi import FastAPI

from activity_contract.logs import configure_logging
from activity_contract.settings import load_settings
from ingest.app import create_app
from ingest.http.connections import ConnectionLimits, GuardedProtocol
from ingest.http.file_limits import fit_connection_cap
from ingest.settings import IngestSettings

GRACEFUL_SHUTDOWN_SECONDS = 10
# Idle connections stay open longer than a 503's Retry-After (5 s) and than load balancers'
# idle timeouts (often 60 s), so the client or the proxy closes them first: a server that
# closes a connection as a client reuses it fails that request with no answer at all.
KEEP_ALIVE_SECONDS = 75
WORKER_APP_FACTORY = "ingest.__main__:worker_app"


def worker_app() -> FastAPI:
    """The app of one worker process: its own logging set up, settings from the environment.

    uvicorn starts each worker in a fresh interpreter, where `main` has not run.
    """
    settings = load_settings(IngestSettings)
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


def connection_limits(settings: IngestSettings) -> ConnectionLimits:
    """The limits of each connection, the cap fitted to the open-file limit (raised if need be)."""
    return ConnectionLimits(
        max_header_bytes=settings.ingest_max_header_bytes,
        max_headers=settings.ingest_max_headers,
        header_timeout_seconds=settings.ingest_header_timeout_seconds,
        body_timeout_seconds=settings.ingest_body_timeout_seconds,
        max_connections=fit_connection_cap(settings.ingest_max_connections),
    )


def main() -> None:
    """Serve the ingest app on INGEST_HOST:INGEST_PORT until SIGTERM or Ctrl-C.

    With INGEST_WORKERS above 1, uvicorn runs that many processes on the same socket, each
    building its app with `worker_app` from the same environment. Every connection is held
    to `connection_limits` (the protocol and its limits pickle to the workers).
    """
    settings = load_settings(IngestSettings)
    configure_logging(settings.log_level, settings.log_format)
    app: FastAPI | str = (
        create_app(settings) if settings.ingest_workers == 1 else WORKER_APP_FACTORY
    )
    uvicorn.run(
        app,
        factory=settings.ingest_workers > 1,
        http=functools.partial(GuardedProtocol, limits=connection_limits(settings)),  # type: ignore[arg-type]
        workers=settings.ingest_workers,
        host=settings.ingest_host,
        port=settings.ingest_port,
        log_config=None,
        access_log=False,
        # X-Forwarded-For is judged by TRUSTED_PROXIES alone (ingest.client_ip); uvicorn's
        # own handling would rewrite the peer address first, trusting 127.0.0.1.
        proxy_headers=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


if __name__ == "__main__":
    main()
