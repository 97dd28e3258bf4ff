"""Ingest's OpenAPI page (`/docs`), opened in headless Chromium with every outside host unreachable.

`scripts/test.sh` installs Debian's `chromium` when it is missing; without it this test skips.
"""

from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from activity_testing.browser import chromium_or_skip, render
from activity_testing.processes import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ROUTES = ("/api/v1/activities", "/api/v1/activities/batch", "/api/v1/users/{user_id}/activities")


def test_openapi_page_renders_the_api_without_the_internet(
    ingest: ServiceProcess, tmp_path: Path
) -> None:
    chromium = chromium_or_skip()
    page_url = f"{ingest.base_url}/docs"

    page = render(chromium, page_url, "swagger-ui", tmp_path / "chromium-profile")

    origins = {urlsplit(urljoin(page_url, resource)).netloc for resource in page.resources}
    assert page.resources, "the page loads no Swagger UI at all"
    assert origins == {urlsplit(ingest.base_url).netloc}, page.resources
    rendered = " ".join(page.text)
    assert "event-tracker ingest" in rendered, "Swagger UI did not run: #swagger-ui is empty"
    # Swagger UI breaks paths at each `/` with <wbr>: read them without the breaks.
    unbroken = "".join(page.text)
    for route in ROUTES:
        assert route in unbroken, f"{route} is not on the rendered page"
    for operation in ("Post Activity Batch", "List User Activities", "Erase User Activities"):
        assert operation in rendered, f"{operation} is not on the rendered page"


def test_swagger_ui_files_are_served_for_good_and_redoc_is_not(ingest: ServiceProcess) -> None:
    page = httpx.get(f"{ingest.base_url}/docs")
    assert page.status_code == 200
    script = next(
        line.split('src="')[1].split('"')[0]
        for line in page.text.splitlines()
        if "swagger-ui-bundle.js" in line
    )
    bundle = httpx.get(urljoin(f"{ingest.base_url}/docs", script))
    assert bundle.status_code == 200
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert "immutable" in bundle.headers["cache-control"]
    assert len(bundle.content) > 500_000
    assert httpx.get(f"{ingest.base_url}/redoc").status_code == 404
