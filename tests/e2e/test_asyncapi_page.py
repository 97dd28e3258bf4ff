"""The processor's AsyncAPI page, opened in headless Chromium with every outside host unreachable.

`scripts/test.sh` installs Debian's `chromium` when it is missing; without it this test skips.
"""

from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

from activity_testing.browser import chromium_or_skip, render
from activity_testing.processes import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

MESSAGE_FIELDS = ("event_id", "user_id", "event_type", "timestamp", "received_at")


def test_asyncapi_page_renders_the_contract_without_the_internet(
    processor: ServiceProcess, tmp_path: Path
) -> None:
    chromium = chromium_or_skip()
    processor.start()
    page_url = f"{processor.base_url}/asyncapi"

    page = render(chromium, page_url, "asyncapi", tmp_path / "chromium-profile")

    origins = {urlsplit(urljoin(page_url, resource)).netloc for resource in page.resources}
    assert page.resources, "the page loads no renderer at all"
    assert origins == {urlsplit(processor.base_url).netloc}, page.resources
    rendered = " ".join(page.text)
    assert "user_activities" in rendered, "the renderer did not run: #asyncapi is empty"
    assert "Operations" in rendered
    for field in MESSAGE_FIELDS:
        assert f'"{field}"' in rendered, f"{field} is not on the rendered page"
