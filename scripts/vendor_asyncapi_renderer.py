"""Vendor a pinned `@asyncapi/react-component` into the processor package from the npm registry.

Usage: `python scripts/vendor_asyncapi_renderer.py [VERSION]` (default: the version in the
current manifest). Downloads the package tarball, checks it against the registry's SHA-512
integrity, refuses a licence other than Apache-2.0, copies the standalone browser bundle, its
stylesheet and licence files into `processor/asyncapi_renderer/`, and rewrites
`manifest.json` with the version and each file's size and SHA-256. Standard library only.
"""

import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

PACKAGE = "@asyncapi/react-component"
REGISTRY = "https://registry.npmjs.org"
EXPECTED_LICENSE = "Apache-2.0"
TARGET = Path(__file__).resolve().parents[1] / "services/processor/src/processor/asyncapi_renderer"
# Name served by the processor -> path inside the npm tarball.
FILES = {
    "index.js": "package/browser/standalone/index.js",
    "index.js.LICENSE.txt": "package/browser/standalone/index.js.LICENSE.txt",
    "default.min.css": "package/styles/default.min.css",
    "LICENSE": "package/LICENSE",
}


def fetch(url: str) -> bytes:
    """The body at `url` (the npm registry only)."""
    if not url.startswith(f"{REGISTRY}/"):
        raise ValueError(f"refusing to download from outside {REGISTRY}: {url}")
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - https registry
        body: bytes = response.read()
        return body


def version_metadata(version: str) -> dict[str, Any]:
    """The registry's metadata of one published version."""
    name = PACKAGE.replace("/", "%2F")
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


def vendor(version: str) -> dict[str, Any]:
    """Download `version`, write its files into TARGET and return the new manifest."""
    metadata = version_metadata(version)
    if metadata.get("license") != EXPECTED_LICENSE:
        raise ValueError(f"{PACKAGE}@{version} is licensed {metadata.get('license')!r}")
    dist = metadata["dist"]
    tarball = fetch(dist["tarball"])
    check_integrity(tarball, dist["integrity"])
    contents: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for name, member in FILES.items():
            extracted = archive.extractfile(member)
            if extracted is None:
                raise ValueError(f"{member} is not a file in {dist['tarball']}")
            contents[name] = extracted.read()
    # Written only once every file was found, so a failed run leaves the old copy whole.
    files: dict[str, dict[str, Any]] = {}
    for name, content in contents.items():
        (TARGET / name).write_bytes(content)
        files[name] = {
            "source": FILES[name].removeprefix("package/"),
            "bytes": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
        }
    return {
        "package": PACKAGE,
        "version": metadata["version"],
        "license": metadata["license"],
        "tarball": dist["tarball"],
        "integrity": dist["integrity"],
        "files": files,
    }


def main() -> int:
    """Vendor the version named on the command line, or re-vendor the current one."""
    manifest_path = TARGET / "manifest.json"
    version = sys.argv[1] if len(sys.argv) > 1 else json.loads(manifest_path.read_text())["version"]
    TARGET.mkdir(parents=True, exist_ok=True)
    manifest = vendor(version)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    for name, entry in manifest["files"].items():
        print(f"{name}: {entry['bytes']} bytes, sha256 {entry['sha256']}")
    print(f"vendored {PACKAGE}@{manifest['version']} into {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
