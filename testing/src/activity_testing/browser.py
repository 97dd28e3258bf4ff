"""Pages as headless Chromium renders them, with every outside host unreachable.

`scripts/test.sh` installs Debian's `chromium` when it is missing; tests that need it skip
without it (`chromium_or_skip`).
"""

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

# Elements without an end tag in serialised HTML.
VOID_ELEMENTS = frozenset(
    {"area", "br", "col", "embed", "hr", "img", "input", "link", "meta", "wbr"}
)
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
    # Every host name fails to resolve: whatever the page needs from outside the service
    # is missing, as on a machine without internet, even where CI has it.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--virtual-time-budget=15000",
)


class RenderedPage(HTMLParser):
    """The text rendered inside the element `root_id` and the scripts and stylesheets loaded."""

    def __init__(self, root_id: str) -> None:
        """Collect the text inside the element whose id is `root_id`."""
        super().__init__()
        self.root_id = root_id
        self.resources: list[str] = []
        self.text: list[str] = []
        self._depth = 0  # element depth inside the root; 0 outside it
        self._in_code = False  # inside <script> or <style>, whose text is not rendered

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Note scripts and stylesheets; count depth inside the root."""
        attributes = dict(attrs)
        if tag == "script" and attributes.get("src"):
            self.resources.append(attributes["src"] or "")
        if tag == "link" and attributes.get("rel") == "stylesheet":
            self.resources.append(attributes.get("href") or "")
        self._in_code = tag in {"script", "style"}
        if self._depth or attributes.get("id") == self.root_id:
            self._depth += tag not in VOID_ELEMENTS

    def handle_endtag(self, tag: str) -> None:
        """Leave an element."""
        self._in_code = False
        if self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        """Keep rendered text inside the root."""
        if self._depth and not self._in_code:
            self.text.append(data)


def chromium_or_skip() -> str:
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
    if result.returncode != 0:
        raise RuntimeError(f"chromium failed: {result.stderr[-2000:]}")
    return result.stdout


def render(chromium: str, url: str, root_id: str, profile: Path) -> RenderedPage:
    """`url` rendered by Chromium, read inside the element `root_id`."""
    page = RenderedPage(root_id)
    page.feed(dump_dom(chromium, url, profile))
    return page
