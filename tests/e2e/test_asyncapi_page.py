"""The processor's AsyncAPI page, opened in headless Chromium with every outside host unreachable.

`scripts/test.sh` installs Debian's `chromium` when it is missing; without it this test skips.
"""

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

from activity_testing.processes import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

# Elements without an end tag in serialised HTML.
VOID_ELEMENTS = frozenset(
    {"area", "br", "col", "embed", "hr", "img", "input", "link", "meta", "wbr"}
)
MESSAGE_FIELDS = ("event_id", "user_id", "event_type", "timestamp", "received_at")
# Virtual time lets the page's scripts run to completion without waiting in real time.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Every host name fails to resolve: whatever the page needs from outside the processor
    # is missing, as on a machine without internet, even where CI has it.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--virtual-time-budget=15000",
)


class RenderedPage(HTMLParser):
    """The text rendered inside `#asyncapi` and the scripts and stylesheets the page loads."""

    def __init__(self) -> None:
        super().__init__()
        self.resources: list[str] = []
        self.text: list[str] = []
        self._depth = 0  # element depth inside #asyncapi; 0 outside it
        self._in_code = False  # inside <script> or <style>, whose text is not rendered

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script" and attributes.get("src"):
            self.resources.append(attributes["src"] or "")
        if tag == "link" and attributes.get("rel") == "stylesheet":
            self.resources.append(attributes.get("href") or "")
        self._in_code = tag in {"script", "style"}
        if self._depth or attributes.get("id") == "asyncapi":
            self._depth += tag not in VOID_ELEMENTS

    def handle_endtag(self, tag: str) -> None:
        self._in_code = False
        if self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth and not self._in_code:
            self.text.append(data)


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium, or a skip saying how to get it."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("Chromium is not installed (scripts/test.sh installs it as root: apt-get)")
    return path


def dump_dom(chromium: str, url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran, as Chromium serialises it."""
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"chromium failed: {result.stderr[-2000:]}"
    return result.stdout


def test_asyncapi_page_renders_the_contract_without_the_internet(
    chromium: str, processor: ServiceProcess, tmp_path: Path
) -> None:
    processor.start()
    page_url = f"{processor.base_url}/asyncapi"

    page = RenderedPage()
    page.feed(dump_dom(chromium, page_url, tmp_path / "chromium-profile"))

    origins = {urlsplit(urljoin(page_url, resource)).netloc for resource in page.resources}
    assert page.resources, "the page loads no renderer at all"
    assert origins == {urlsplit(processor.base_url).netloc}, page.resources
    rendered = " ".join(page.text)
    assert "user_activities" in rendered, "the renderer did not run: #asyncapi is empty"
    assert "Operations" in rendered
    for field in MESSAGE_FIELDS:
        assert f'"{field}"' in rendered, f"{field} is not on the rendered page"
