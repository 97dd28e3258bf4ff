"""The AsyncAPI page's renderer is the vendored, pinned copy, served by the processor itself.

No network: the app is called in process, without starting its broker.
"""

import hashlib
import json
from collections.abc import AsyncIterator
from importlib import resources

import httpx
import pytest

from processor.app import create_asyncapi_app
from processor.asyncapi_page import CONTENT_TYPES, Renderer, load_renderer

MANIFEST = json.loads(
    resources.files("processor").joinpath("asyncapi_renderer/manifest.json").read_text()
)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A client calling the processor app in process."""
    transport = httpx.ASGITransport(app=create_asyncapi_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://processor") as client:
        yield client


@pytest.fixture
def renderer() -> Renderer:
    """The vendored renderer."""
    return load_renderer()


def test_vendored_files_match_the_recorded_checksums(renderer: Renderer) -> None:
    assert MANIFEST["package"] == "@asyncapi/react-component"
    assert MANIFEST["license"] == "Apache-2.0"
    assert renderer.version == MANIFEST["version"]
    assert set(MANIFEST["files"]) == set(CONTENT_TYPES) == set(renderer.files)
    for name, content in renderer.files.items():
        recorded = MANIFEST["files"][name]
        assert len(content) == recorded["bytes"], name
        assert hashlib.sha256(content).hexdigest() == recorded["sha256"], name
    assert b"Apache License" in renderer.files["LICENSE"]


async def test_page_loads_the_renderer_from_the_processor(
    http: httpx.AsyncClient, renderer: Renderer
) -> None:
    page = await http.get("/asyncapi")
    assert page.status_code == 200
    assert f'<script src="{renderer.base_path}/index.js"></script>' in page.text
    assert f'<link rel="stylesheet" href="{renderer.base_path}/default.min.css">' in page.text


@pytest.mark.parametrize("name", sorted(CONTENT_TYPES))
async def test_renderer_files_are_served_with_type_and_cache_headers(
    http: httpx.AsyncClient, renderer: Renderer, name: str
) -> None:
    response = await http.get(f"{renderer.base_path}/{name}")
    assert response.status_code == 200
    assert response.content == renderer.files[name]
    assert response.headers["content-type"] == CONTENT_TYPES[name]
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_no_try_it_endpoint_and_nothing_else_under_static(
    http: httpx.AsyncClient, renderer: Renderer
) -> None:
    # The "try it" endpoint would publish to the real broker (design §3.4).
    assert (await http.post("/asyncapi/try", json={})).status_code == 404
    assert (await http.get(f"{renderer.base_path}/manifest.json")).status_code == 404
    assert (await http.get(f"{renderer.base_path}/../app.py")).status_code == 404
