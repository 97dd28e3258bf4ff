"""The processor's AsyncAPI page, opened in headless Chromium with every outside host unreachable.

`scripts/test.sh` installs Debian's `chromium` when it is missing; without it this test skips.
"""

from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

from activity_contract.tracking_plan import load_plan_events
from activity_testing.browser import chromium_or_skip, render
from activity_testing.plans import EXAMPLE_PLAN
from activity_testing.processes import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

MESSAGE_FIELDS = ("event_id", "user_id", "event_type", "timestamp", "received_at")
PLANNED = load_plan_events(EXAMPLE_PLAN)


@pytest.fixture
def stack_env(stack_env: dict[str, str]) -> dict[str, str]:
    """The processor runs with the example tracking plan: its page shows each event type."""
    return {**stack_env, "TRACKING_PLAN_DIR": str(EXAMPLE_PLAN)}


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
    for event in PLANNED:
        # Each planned type's message: its title (type and version) and its description.
        assert f"{event.event_type} {event.version}" in rendered, event.event_type
        assert event.description.split(".")[0] in rendered, event.event_type
