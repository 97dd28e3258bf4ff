"""Every FastAPI dependency of ingest, as typed aliases: the app's running parts and keys."""

from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from activity_contract.tracking_plan import TrackingPlan
from ingest.auth import ApiKeys
from ingest.domain_errors import DatabaseUnavailableError, InvalidQueryError, UnauthorizedError
from ingest.erasures import ActivityEraser
from ingest.metrics import IngestMetrics
from ingest.publishing import ActivityPublisher
from ingest.reads import ActivityReader
from ingest.shared_windows import SharedWindows


async def get_publisher(request: Request) -> ActivityPublisher:
    """The app's publisher."""
    publisher: ActivityPublisher = request.app.state.publisher
    return publisher


async def get_reader(request: Request) -> ActivityReader:
    """The app's MongoDB reader; 503 when MONGODB_URL is not configured."""
    reader: ActivityReader | None = request.app.state.reader
    if reader is None:
        raise DatabaseUnavailableError("The read API has no database configured (MONGODB_URL).")
    return reader


async def get_metrics(request: Request) -> IngestMetrics:
    """The app's own metrics."""
    metrics: IngestMetrics = request.app.state.metrics
    return metrics


async def get_eraser(request: Request) -> ActivityEraser:
    """The app's eraser; 503 when MONGODB_URL is not configured."""
    eraser: ActivityEraser | None = request.app.state.eraser
    if eraser is None:
        raise DatabaseUnavailableError("Erasure has no database configured (MONGODB_URL).")
    return eraser


async def get_shared_windows(request: Request) -> SharedWindows:
    """The app's shared rate-limit windows in Redis."""
    windows: SharedWindows = request.app.state.shared_windows
    return windows


async def get_tracking_plan(request: Request) -> TrackingPlan | None:
    """The app's tracking plan (None: no plan configured)."""
    plan: TrackingPlan | None = request.app.state.tracking_plan
    return plan


PublisherDep = Annotated[ActivityPublisher, Depends(get_publisher)]
MetricsDep = Annotated[IngestMetrics, Depends(get_metrics)]
TrackingPlanDep = Annotated[TrackingPlan | None, Depends(get_tracking_plan)]
ReaderDep = Annotated[ActivityReader, Depends(get_reader)]
EraserDep = Annotated[ActivityEraser, Depends(get_eraser)]
SharedWindowsDep = Annotated[SharedWindows, Depends(get_shared_windows)]

# One security scheme per kind of key, so the OpenAPI document says which one a route needs.
_ingest_key = HTTPBearer(
    auto_error=False, scheme_name="IngestKey", description="A key from INGEST_API_KEYS."
)
_read_key = HTTPBearer(
    auto_error=False, scheme_name="ReadKey", description="A key from READ_API_KEYS."
)
_admin_key = HTTPBearer(
    auto_error=False,
    scheme_name="AdminKey",
    description="A key from ADMIN_API_KEYS (erasure); read and ingest keys do not work.",
)
IngestKeyDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_ingest_key)]
ReadKeyDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_read_key)]
AdminKeyDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_key)]


def _check(keys: ApiKeys, credentials: HTTPAuthorizationCredentials | None) -> None:
    if credentials is None or not keys.accepts(credentials.credentials):
        raise UnauthorizedError


async def require_ingest_key(request: Request, credentials: IngestKeyDep) -> None:
    """A key from INGEST_API_KEYS (mounted only when that is set: ingest is open otherwise)."""
    _check(request.app.state.ingest_api_keys, credentials)


async def require_read_key(request: Request, credentials: ReadKeyDep) -> None:
    """The read API needs a key from READ_API_KEYS; with none configured it is closed."""
    _check(request.app.state.read_api_keys, credentials)


async def require_admin_key(request: Request, credentials: AdminKeyDep) -> None:
    """Erasure needs a key from ADMIN_API_KEYS; with none configured it is closed."""
    _check(request.app.state.admin_api_keys, credentials)


async def read_rate_limit(request: Request, response: Response) -> None:
    """The app's read budget per client (its fastapi-limiter dependency)."""
    await request.app.state.read_limit(request, response)


async def admin_rate_limit(request: Request, response: Response) -> None:
    """The app's erasure budget per client (its fastapi-limiter dependency)."""
    await request.app.state.admin_limit(request, response)


async def refuse_unknown_query_parameters(request: Request) -> None:
    """422 naming each query parameter the route does not declare: a typo is not ignored."""
    if not request.scope["query_string"]:
        return
    known = {parameter.alias for parameter in request.scope["route"].dependant.query_params}
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise InvalidQueryError(*((name, "not a parameter of this route") for name in unknown))


# Route dependencies: rate limit first, then the key (wrong keys spend the budget too),
# then the query's parameter names.
ReadRateLimitDep = Depends(read_rate_limit)
ReadKeyRequiredDep = Depends(require_read_key)
AdminRateLimitDep = Depends(admin_rate_limit)
AdminKeyRequiredDep = Depends(require_admin_key)
KnownQueryParametersDep = Depends(refuse_unknown_query_parameters)
