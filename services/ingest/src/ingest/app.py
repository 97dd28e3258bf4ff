"""The ingest app factory: routers, lifespan, middleware and error handlers."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry

from activity_contract.settings import load_settings
from ingest.access_log import AccessLogMiddleware
from ingest.auth import ApiKeys, require_ingest_key, require_read_key
from ingest.errors import install_error_handlers
from ingest.metrics import IngestMetrics, instrument_http
from ingest.publishing import ActivityPublisher
from ingest.rate_limit import IngestRateLimiter
from ingest.reads import ActivityReader
from ingest.request_guards import BATCH_MAX_BYTES, SINGLE_EVENT_MAX_BYTES, JsonBodyGuard
from ingest.request_id import RequestIdMiddleware
from ingest.routes import activities, health, users
from ingest.settings import IngestSettings

API_PREFIX = "/api/v1"


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    """Build the ingest app; with no settings, read them from the environment."""
    settings = settings or load_settings(IngestSettings)
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    publisher = ActivityPublisher(settings, metrics)
    rate_limiter = IngestRateLimiter(settings)
    # The read API's own client; the write path never touches MongoDB.
    reader = (
        ActivityReader(settings.mongodb_url, settings.mongodb_database)
        if settings.mongodb_url
        else None
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await rate_limiter.start()
        try:
            await publisher.start()
            try:
                yield
            finally:
                await publisher.stop()
        finally:
            await rate_limiter.stop()
            if reader is not None:
                await reader.close()

    app = FastAPI(
        title="event-tracker ingest",
        version="1.0.0",
        description="Accepts user activity events and publishes them to RabbitMQ.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.publisher = publisher
    app.state.reader = reader
    app.state.metrics = metrics
    app.state.rate_limiter = rate_limiter
    app.state.ingest_api_keys = ApiKeys(settings.ingest_api_keys)
    app.state.read_api_keys = ApiKeys(settings.read_api_keys)
    # Rate limit first, then the key: wrong keys spend the client's budget too, so keys
    # cannot be guessed faster than the limit. Health, metrics and docs are not limited.
    # Without INGEST_API_KEYS ingest is open, and its OpenAPI schema declares no security.
    write_guards = [Depends(rate_limiter)]
    if settings.ingest_api_keys:
        write_guards.append(Depends(require_ingest_key))
    app.include_router(activities.router, prefix=API_PREFIX, dependencies=write_guards)
    app.include_router(users.router, prefix=API_PREFIX, dependencies=[Depends(require_read_key)])
    app.include_router(health.router)
    install_error_handlers(app)
    app.add_middleware(
        JsonBodyGuard,
        limits={
            f"{API_PREFIX}/activities": SINGLE_EVENT_MAX_BYTES,
            f"{API_PREFIX}/activities/batch": BATCH_MAX_BYTES,
        },
    )
    # Added last = outermost: the request id exists before the access log and metrics run.
    instrument_http(app, registry)
    app.add_middleware(AccessLogMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app
