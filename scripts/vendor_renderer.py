"""Vendor a pinned documentation renderer from the npm registry into a service package.

Usage: `python scripts/vendor_renderer.py {asyncapi,swagger-ui} [VERSION]` (default: the
version in the current manifest). `asyncapi`: `@asyncapi/react-component` for the processor's
`/asyncapi` page; `swagger-ui`: `swagger-ui-dist` for ingest's `/docs` page. Downloads the
package tarball, checks it against the registry's SHA-512 integrity, refuses a licence other
than Apache-2.0, copies the browser bundle, its stylesheet and licence files into the
package, and rewrites `manifest.json` with the version and each file's size and SHA-256.
Standard library only.
"""

import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGISTRY = "https://registry.npmjs.org"
EXPECTED_LICENSE = "Apache-2.0"
SERVICES = Path(__file__).resolve().parents[1] / "services"


@dataclass(frozen=True)
class Renderer:
    """An npm package, where its files go, and which (name served -> path in the tarball)."""

    package: str
    target: Path
    files: dict[str, str]


RENDERERS = {
    "asyncapi": Renderer(
        "@asyncapi/react-component",
        SERVICES / "processor/src/processor/asyncapi_renderer",
        {
            "index.js": "package/browser/standalone/index.js",
            "index.js.LICENSE.txt": "package/browser/standalone/index.js.LICENSE.txt",
            "default.min.css": "package/styles/default.min.css",
            "LICENSE": "package/LICENSE",
        },
    ),
    "swagger-ui": Renderer(
        "swagger-ui-dist",
        SERVICES / "ingest/src/ingest/http/swagger_ui",
        {
            "swagger-ui-bundle.js": "package/swagger-ui-bundle.js",
            "swagger-ui.css": "package/swagger-ui.css",
            "favicon-32x32.png": "package/favicon-32x32.png",
            "LICENSE": "package/LICENSE",
            "NOTICE": "package/NOTICE",
        },
    ),
}


def fetch(url: str) -> bytes:
    """The body at `url` (the npm registry only)."""
    if not url.startswith(f"{REGISTRY}/"):
        raise ValueError(f"refusing to download from outside {REGISTRY}: {url}")
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - https registry
        body: bytes = response.read()
        return body


def version_metadata(package: str, version: str) -> dict[str, Any]:
    """The registry's metadata of one published version."""
    name = package.replace("/", "%2F")
    metadata: dict[str, Any] = json.loads(fetch(f"{REGISTRY}/{name}/{version}"))
    return metadata


def check_integrity(tarball: bytes, integrity: str) -> None:
    """Raise unless `tarball` matches the registry's `sha512-<base64>` integrity string."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise ValueError(f"unexpected integrity algorithm: {integrity}")
    actual = base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if actual != expected:
        raise ValueError(f"tarball does not match the registry's integrity {integrity}")


def vendor(renderer: Renderer, version: str) -> dict[str, Any]:
    """Download `version`, write its files into the target and return the new manifest."""
    metadata = version_metadata(renderer.package, version)
    if metadata.get("license") != EXPECTED_LICENSE:
        raise ValueError(f"{renderer.package}@{version} is licensed {metadata.get('license')!r}")
    dist = metadata["dist"]
    tarball = fetch(dist["tarball"])
    check_integrity(tarball, dist["integrity"])
    contents: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for name, member in renderer.files.items():
            extracted = archive.extractfile(member)
            if extracted is None:
                raise ValueError(f"{member} is not a file in {dist['tarball']}")
            contents[name] = extracted.read()
    # Written only once every file was found, so a failed run leaves the old copy whole.
    files: dict[str, dict[str, Any]] = {}
    for name, content in contents.items():
        (renderer.target / name).write_bytes(content)
        files[name] = {
            "source": renderer.files[name].removeprefix("package/"),
            "bytes": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
        }
    return {
        "package": renderer.package,
        "version": metadata["version"],
        "license": metadata["license"],
        "tarball": dist["tarball"],
        "integrity": dist["integrity"],
        "files": files,
    }


def main() -> int:
    """Vendor the version named on the command line, or re-vendor the current one."""
    if len(sys.argv) < 2 or sys.argv[1] not in RENDERERS:
        print(f"usage: vendor_renderer.py {{{','.join(RENDERERS)}}} [VERSION]", file=sys.stderr)
        return 2
    renderer = RENDERERS[sys.argv[1]]
    manifest_path = renderer.target / "manifest.json"
    version = sys.argv[2] if len(sys.argv) > 2 else json.loads(manifest_path.read_text())["version"]
    renderer.target.mkdir(parents=True, exist_ok=True)
    manifest = vendor(renderer, version)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    for name, entry in manifest["files"].items():
        print(f"{name}: {entry['bytes']} bytes, sha256 {entry['sha256']}")
    print(f"vendored {renderer.package}@{manifest['version']} into {renderer.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
