"""The ingest app factory: routers, lifespan, middleware and error handlers."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from activity_contract.events import ActivityBatchIn, ActivityIn
from activity_contract.process import freeze_startup_objects
from activity_contract.settings import load_settings
from activity_contract.startup import StartupFailureLine
from activity_contract.tracing import start_tracing
from ingest.auth import ApiKeys
from ingest.client_identity import ClientIdentity
from ingest.deps import require_ingest_key
from ingest.erasures import ActivityEraser
from ingest.http.connections import CONNECTION_CLOSURES, ConnectionClosures
from ingest.http.docs_page import docs_router
from ingest.http.errors import install_error_handlers
from ingest.http.json_bodies import document_request_bodies
from ingest.http.metrics import ConnectionMetrics, HttpMetrics
from ingest.http.request_guards import BATCH_MAX_BYTES, SINGLE_EVENT_MAX_BYTES
from ingest.http.request_ids import install_log_record_request_ids
from ingest.http.request_scope import RequestScope
from ingest.http.write_path import WRITE_ROUTE, WritePath, WriteRoute
from ingest.metrics import IngestMetrics
from ingest.plan_checks import PlanChecks
from ingest.publishing import ActivityPublisher
from ingest.rate_limit import ClientRateLimiter
from ingest.reads import ActivityReader
from ingest.routes import activities, health, tracking_plan, users
from ingest.settings import IngestSettings
from ingest.shared_windows import SharedWindows


class IngestApp(FastAPI):
    """FastAPI, with the write routes answered first by `write_path` (the hot path)."""

    write_path: WritePath | None = None  # both set by `create_app`
    write_scope: ASGIApp  # the write path in its `RequestScope`

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A POST to a write route goes to the write path; everything else to FastAPI."""
        write_path = self.write_path
        if scope["type"] == "http" and write_path is not None:
            write = write_path.route_of(scope)
            if write is not None:
                scope[WRITE_ROUTE] = write
                await self.write_scope(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: IngestSettings | None = None) -> IngestApp:
    """Build the ingest app; with no settings, read them from the environment."""
    settings = settings or load_settings(IngestSettings)
    plan = settings.tracking_plan()  # compiled once; an invalid plan stops start-up here
    install_log_record_request_ids()
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    tracing = start_tracing(settings.otel_traces_exporter, "event-tracker-ingest")
    tracer = tracing.tracer if tracing else None
    publisher = ActivityPublisher(settings, metrics, tracer)
    shared_windows = SharedWindows(
        settings.redis_url,
        settings.rate_limit_key_prefix,
        settings.redis_timeout_seconds,
        metrics,
    )
    identity = ClientIdentity(
        settings.trusted_proxies, settings.rate_limit_ipv4_prefix, settings.rate_limit_ipv6_prefix
    )
    write_limit = ClientRateLimiter("write", settings.rate_limit, shared_windows, identity, metrics)
    read_limit = ClientRateLimiter(
        "read", settings.read_rate_limit, shared_windows, identity, metrics
    )
    # Erasure has a budget of its own (the read rule), so admin keys cannot be guessed fast.
    admin_limit = ClientRateLimiter(
        "admin", settings.read_rate_limit, shared_windows, identity, metrics
    )
    # The read API's own client; the write path never touches MongoDB.
    reader = (
        ActivityReader(settings.mongodb_url, settings.mongodb_database)
        if settings.mongodb_url
        else None
    )
    eraser = ActivityEraser(reader.client, settings.mongodb_database) if reader else None
    # Connections the HTTP edge closes (ingest.http.connections) are counted here: the
    # lifespan hands this to the server's protocol through uvicorn's lifespan state.
    closures = ConnectionClosures(ConnectionMetrics(registry))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        await shared_windows.start()
        try:
            await publisher.start()
            freeze_startup_objects()
            try:
                yield {CONNECTION_CLOSURES: closures}
            finally:
                await publisher.stop()
        finally:
            await shared_windows.stop()
            if reader is not None:
                await reader.close()
            if tracing is not None:
                tracing.shutdown()  # the last spans are exported before the process ends

    app = IngestApp(
        title="event-tracker ingest",
        version="1.0.0",
        description="Accepts user activity events and publishes them to RabbitMQ.",
        lifespan=lifespan,
        docs_url=None,  # served by docs_router, with Swagger UI from the package
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.publisher = publisher
    app.state.reader = reader
    app.state.eraser = eraser
    app.state.metrics = metrics
    app.state.tracking_plan = plan
    app.state.shared_windows = shared_windows
    app.state.read_limit = read_limit
    app.state.admin_limit = admin_limit
    app.state.ingest_api_keys = ApiKeys(settings.ingest_api_keys)
    app.state.read_api_keys = ApiKeys(settings.read_api_keys)
    app.state.admin_api_keys = ApiKeys(settings.admin_api_keys)
    # Rate limit first, then the key: wrong keys spend the client's budget too, so keys
    # cannot be guessed faster than the limit. Health, metrics and docs are not limited.
    # Without INGEST_API_KEYS ingest is open, and its OpenAPI schema declares no security.
    # The routers carry their full path prefixes, so each route knows its whole template.
    # On the write routes these dependencies declare the limit and the key to OpenAPI; the
    # write path (`ingest.http.write_path`) applies them, in the same order.
    write_guards = [Depends(write_limit)]
    if settings.ingest_api_keys:
        write_guards.append(Depends(require_ingest_key))
    app.include_router(activities.router, dependencies=write_guards)
    app.include_router(users.router)  # its routes name their own limits and keys
    app.include_router(health.router)
    app.include_router(tracking_plan.router)
    app.include_router(docs_router(app.title, app.openapi_url or "/openapi.json"))
    document_request_bodies(app, plan, ActivityIn, ActivityBatchIn)
    install_error_handlers(
        app, [activities.router, users.router, health.router, tracking_plan.router]
    )
    # Pure ASGI middleware; added last = outermost.
    http_metrics = HttpMetrics(registry)
    app.add_middleware(RequestScope, metrics=http_metrics, tracer=tracer)
    # The write routes' hot path, under the same request scope as everything else.
    declared = {
        route.path: route for route in activities.router.routes if isinstance(route, APIRoute)
    }
    write_path = WritePath(
        [
            WriteRoute(declared[activities.router.prefix], ActivityIn, SINGLE_EVENT_MAX_BYTES),
            WriteRoute(
                declared[f"{activities.router.prefix}/batch"], ActivityBatchIn, BATCH_MAX_BYTES
            ),
        ],
        write_limit,
        app.state.ingest_api_keys,
        publisher,
        metrics,
        PlanChecks(plan, metrics) if plan is not None else None,
    )
    app.write_path = write_path
    app.write_scope = RequestScope(write_path, metrics=http_metrics, tracer=tracer)
    # Lifespan only: a start-up a dependency refused logs its cause, not a traceback.
    app.add_middleware(StartupFailureLine)
    return app
