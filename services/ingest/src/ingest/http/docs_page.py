"""The OpenAPI page at `/docs`, with Swagger UI served by ingest itself.

FastAPI's page loads Swagger UI from a public CDN by default, so it is blank wherever that
CDN is unreachable. Ingest ships a pinned copy (`swagger_ui/`, see its `manifest.json`;
`make swagger-ui` updates it) and serves it under a versioned path, so browsers may cache it
for good. FastAPI's ReDoc page, which has the same CDN dependency, is not served.
"""

import json
from collections.abc import Awaitable, Callable
from importlib import resources

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

DOCS_PATH = "/docs"
# The path names Swagger UI's version, so a new version is a new URL and a cached copy never
# goes stale.
CACHE_CONTROL = "public, max-age=31536000, immutable"
CONTENT_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "LICENSE": "text/plain; charset=utf-8",
    "NOTICE": "text/plain; charset=utf-8",
}


def docs_router(title: str, openapi_url: str) -> APIRouter:
    """`/docs` and the Swagger UI files it loads, read once from the package."""
    folder = resources.files("ingest.http").joinpath("swagger_ui")
    version = json.loads(folder.joinpath("manifest.json").read_text())["version"]
    static = f"{DOCS_PATH}/static/{version}"
    router = APIRouter(include_in_schema=False)

    @router.get(DOCS_PATH)
    async def docs(request: Request) -> HTMLResponse:
        """The Swagger UI page for this app's OpenAPI document."""
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{root}{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{static}/swagger-ui.css",
            swagger_favicon_url=f"{root}{static}/favicon-32x32.png",
        )

    for name, content_type in CONTENT_TYPES.items():
        content = folder.joinpath(name).read_bytes()
        router.add_api_route(f"{static}/{name}", _static_file(content, content_type))
    return router


def _static_file(content: bytes, content_type: str) -> Callable[[], Awaitable[Response]]:
    headers = {"cache-control": CACHE_CONTROL, "x-content-type-options": "nosniff"}

    async def static_file() -> Response:
        """A vendored Swagger UI file."""
        return Response(content, media_type=content_type, headers=headers)

    return static_file
