"""The AsyncAPI page at `/asyncapi`, with its renderer served by the processor itself.

FastStream's page loads `@asyncapi/react-component` from a public CDN by default, so it is
blank wherever that CDN is unreachable. The processor ships a pinned copy of the renderer
(`asyncapi_renderer/`, see its `manifest.json`; `make asyncapi-renderer` updates it) and
serves it under a versioned path, so browsers may cache it for good.
"""

import json
from dataclasses import dataclass
from importlib import resources

from faststream.asgi import AsgiResponse, AsyncAPIRoute, get
from faststream.asgi.handlers import HttpHandler

PAGE_PATH = "/asyncapi"
RENDERER_PACKAGE_DIR = "asyncapi_renderer"
# The path names the renderer's version, so a new version is a new URL and a cached copy
# never goes stale.
CACHE_CONTROL = "public, max-age=31536000, immutable"
CONTENT_TYPES = {
    "index.js": "text/javascript; charset=utf-8",
    "default.min.css": "text/css; charset=utf-8",
    "index.js.LICENSE.txt": "text/plain; charset=utf-8",
    "LICENSE": "text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class Renderer:
    """The vendored renderer: its version and the content of each file it serves."""

    version: str
    files: dict[str, bytes]

    @property
    def base_path(self) -> str:
        """Where its files are served."""
        return f"{PAGE_PATH}/static/{self.version}"


def load_renderer() -> Renderer:
    """Read the vendored renderer from the package (its files and `manifest.json`)."""
    folder = resources.files("processor").joinpath(RENDERER_PACKAGE_DIR)
    manifest = json.loads(folder.joinpath("manifest.json").read_text())
    return Renderer(
        version=manifest["version"],
        files={name: folder.joinpath(name).read_bytes() for name in CONTENT_TYPES},
    )


def asyncapi_page_route(renderer: Renderer) -> AsyncAPIRoute:
    """The page route: renderer from our own paths, and no "try it" endpoint (design §3.4).

    The "try it" endpoint would publish whatever a visitor posts to the real broker.
    """
    return AsyncAPIRoute(
        PAGE_PATH,
        try_it_out_path=None,
        asyncapi_js_url=f"{renderer.base_path}/index.js",
        asyncapi_css_url=f"{renderer.base_path}/default.min.css",
    )


def renderer_routes(renderer: Renderer) -> list[tuple[str, HttpHandler]]:
    """One GET route per renderer file, answered from memory without any network access."""
    return [
        (f"{renderer.base_path}/{name}", _static_file(content, CONTENT_TYPES[name]))
        for name, content in renderer.files.items()
    ]


def _static_file(content: bytes, content_type: str) -> HttpHandler:
    response = AsgiResponse(
        content,
        200,
        headers={
            "content-type": content_type,
            "content-length": str(len(content)),
            "cache-control": CACHE_CONTROL,
            "x-content-type-options": "nosniff",
        },
    )

    @get(include_in_schema=False)
    async def static_file(_: object) -> AsgiResponse:
        """A vendored renderer file."""
        return response

    return static_file
