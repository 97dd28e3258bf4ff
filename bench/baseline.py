"""The Node baseline (`--baseline PATH`): a temporary copy with its dependencies installed.

The folder given is never written to: it is copied to a temporary folder, `npm ci` runs
there in `api/` and `consumer/`, and the copy is removed at the end. Installed
`node_modules` are cached outside the repository, keyed by the package-lock's hash and the
Node version, so later runs skip `npm ci`.
"""

import contextlib
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.stack import SystemSpec, say

SERVICES = ("api", "consumer")


def cache_root() -> Path:
    """Where installed node_modules are kept between runs (BENCH_CACHE_DIR overrides)."""
    configured = os.environ.get("BENCH_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "event-tracker-bench"


def _node_version(node: str) -> str:
    result = subprocess.run(  # noqa: S603 - the node binary found on PATH
        [node, "--version"], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def _writable(root: Path) -> None:
    """The copy of a read-only folder made writable (for npm and for removing it)."""
    for folder, _, files in os.walk(root):
        os.chmod(folder, os.stat(folder).st_mode | stat.S_IWUSR)
        for name in files:
            path = Path(folder) / name
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def _install(service_dir: Path, node_version: str) -> None:
    """node_modules of one service: from the cache, or `npm ci` (and then cached)."""
    lock = service_dir / "package-lock.json"
    key = hashlib.sha256(lock.read_bytes() + node_version.encode()).hexdigest()[:16]
    cached = cache_root() / f"{service_dir.name}-{key}" / "node_modules"
    if cached.is_dir():
        (service_dir / "node_modules").symlink_to(cached, target_is_directory=True)
        say(f"  baseline {service_dir.name}: node_modules from the cache {cached.parent}")
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("--baseline needs Node.js 20.19+ and npm on PATH")
    say(f"  baseline {service_dir.name}: npm ci")
    subprocess.run(  # noqa: S603 - npm with fixed arguments in our temporary copy
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=service_dir,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # Cache it: copy beside the final place, then rename (atomic; a concurrent run wins).
    cached.parent.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{service_dir.name}-", dir=cached.parent.parent))
    try:
        shutil.copytree(service_dir / "node_modules", partial / "node_modules", symlinks=True)
        with contextlib.suppress(OSError):
            partial.rename(cached.parent)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


@contextlib.contextmanager
def baseline_spec(source: Path) -> Iterator[SystemSpec]:
    """A runnable copy of the Node baseline in `source`; removed when the block exits."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("--baseline needs Node.js 20.19+ on PATH")
    if not all((source / name / "package-lock.json").is_file() for name in SERVICES):
        raise RuntimeError(f"{source} has no api/ and consumer/ with a package-lock.json")
    version = _node_version(node)
    copy = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    try:
        shutil.copytree(
            source, copy, dirs_exist_ok=True, ignore=shutil.ignore_patterns("node_modules")
        )
        _writable(copy)
        for name in SERVICES:
            _install(copy / name, version)
        yield SystemSpec(
            name="baseline",
            ingest_command=(node, "api/server.js"),
            processor_command=(node, "consumer/worker.js"),
            cwd=copy,
            reads=False,
            stored_metric="consumer_events_stored_total",
            description=f"Node {version}, {source}",
        )
    finally:
        _writable(copy)
        shutil.rmtree(copy, ignore_errors=True)
