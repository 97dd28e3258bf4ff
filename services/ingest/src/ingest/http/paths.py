"""The path a request's route is matched by: its path under the root path it is served at."""

from starlette._utils import get_route_path
from starlette.types import Scope


def route_path(scope: Scope) -> str:
    """The request's path relative to its `root_path`, as the router matches it.

    Under a root path (uvicorn's `--root-path`, or the app mounted under a prefix in another
    ASGI app) `scope["path"]` starts with the root path, and the router matches what
    follows it; every check of a path outside the router must do the same, or it silently
    stops applying. This is the router's own function (FastAPI's routing imports it from
    Starlette too), so a guard and the route it guards agree on every path.
    """
    return get_route_path(scope)
