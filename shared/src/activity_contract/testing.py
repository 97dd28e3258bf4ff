"""Test helpers both services' tests and the end-to-end tests import (standard library only).

They start real processes (SecantusDB, the two services) and create isolated RabbitMQ
virtual hosts; nothing here fakes a component.
"""

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
RABBITMQ_USER = "guest"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


def event_payload(**overrides: Any) -> dict[str, Any]:
    """A valid `ActivityIn` body; keyword arguments replace or add fields."""
    payload: dict[str, Any] = {
        "user_id": "user-1",
        "event_type": "page_view",
        "metadata": {"path": "/home"},
    }
    payload.update(overrides)
    return payload


def venv_script(name: str) -> str:
    """Path of a console script installed beside the running interpreter."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (run `uv sync --all-packages`)")
    return found


@dataclass
class PostOutcome:
    """What ingest answered to each posted event, by the client-chosen event id."""

    accepted: list[str] = field(default_factory=list)  # answered 202
    refused: list[str] = field(default_factory=list)  # answered 503: the client may retry
    statuses: Counter[int] = field(default_factory=Counter)  # 0 counts "no HTTP answer"


class SecantusServer:
    """A SecantusDB server (MongoDB wire protocol, WiredTiger storage) in a child process."""

    def __init__(
        self, storage_path: Path, *, sync_on_commit: bool = True, test_commands: bool = False
    ) -> None:
        """Prepare a server storing under `storage_path`; `start()` runs it.

        `test_commands` enables mongod's test-only commands, `configureFailPoint` above all.
        """
        self.storage_path = storage_path
        self.sync_on_commit = sync_on_commit
        self.test_commands = test_commands
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The MongoDB connection string."""
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> "SecantusServer":
        """Start (or restart) the server on the same port and storage; wait until it listens."""
        self.storage_path.mkdir(parents=True, exist_ok=True)
        command = [
            venv_script("secantusd-py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-path",
            str(self.storage_path),
            "--log-level",
            "WARNING",
        ]
        if self.sync_on_commit:
            command.append("--sync-on-commit")
        if self.test_commands:
            command.append("--enable-test-commands")
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        wait_for_port("127.0.0.1", self.port)
        return self

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Stop the server with `sig` (SIGKILL simulates a crash) and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "SecantusServer":
        """Start the server."""
        return self.start()

    def __exit__(self, *_: object) -> None:
        """Stop the server."""
        self.stop()


def rabbitmqctl(*args: str) -> str:
    """Run `rabbitmqctl` with `args` and return its output; raise when it fails."""
    result = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def with_vhost(url: str, vhost: str) -> str:
    """`url` pointing at virtual host `vhost`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


@contextlib.contextmanager
def rabbit_vhost(base_url: str = DEFAULT_RABBITMQ_URL) -> Iterator[str]:
    """A fresh RabbitMQ virtual host for one test; deleted afterwards with all it holds."""
    vhost = f"event-tracker-test-{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, RABBITMQ_USER, ".*", ".*", ".*")
        yield with_vhost(base_url, vhost)
    finally:
        rabbitmqctl("delete_vhost", vhost)


def vhost_of(vhost_url: str) -> str:
    """The virtual host named in the path of `vhost_url`."""
    return unquote(urlsplit(vhost_url).path.lstrip("/"))


def queue_depths(vhost_url: str, column: str = "messages") -> dict[str, int]:
    """Per queue of the vhost in `vhost_url`: `column` of `rabbitmqctl list_queues`.

    The default, `messages`, counts ready plus unacknowledged messages;
    `messages_unacknowledged` counts only those delivered and not yet settled.
    """
    output = rabbitmqctl(
        "list_queues", "-p", vhost_of(vhost_url), "name", column, "--no-table-headers", "--quiet"
    )
    depths = {}
    for line in output.splitlines():
        name, _, count = line.rpartition("\t")
        if name:
            depths[name] = int(count)
    return depths


def close_vhost_connections(vhost_url: str, reason: str = "test") -> None:
    """Drop every client connection to the vhost in `vhost_url` (never the whole node)."""
    rabbitmqctl("close_all_connections", "-p", vhost_of(vhost_url), reason)


@contextlib.contextmanager
def vhost_outage(vhost_url: str) -> Iterator[None]:
    """Drop every connection to the vhost and refuse new ones until the block exits.

    A broker outage as the vhost's clients see it (refused reconnects included), while the
    shared node and every other vhost keep running.
    """
    vhost = vhost_of(vhost_url)
    rabbitmqctl("set_vhost_limits", "-p", vhost, '{"max-connections": 0}')
    try:
        close_vhost_connections(vhost_url, "simulated broker outage")
        yield
    finally:
        rabbitmqctl("clear_vhost_limits", "-p", vhost)


class StallingProxy:
    """A TCP forwarder that can stall: bytes stop flowing both ways, sockets stay open.

    Put it between a service and RabbitMQ to make the broker look hung (no confirms, no
    errors) without touching the shared node. Runs on the caller's event loop.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        """Forward to target_host:target_port once `start()` ran."""
        self.target = (target_host, target_port)
        self.port = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> "StallingProxy":
        """Listen on a free port of 127.0.0.1."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stall(self) -> None:
        """Stop forwarding; what arrives meanwhile waits in the proxy."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again, the held bytes first."""
        self._flowing.set()

    async def close(self) -> None:
        """Stop listening and drop every forwarded connection."""
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream_r, upstream_w = await asyncio.open_connection(*self.target)
        for reader, writer in ((client_r, upstream_w), (upstream_r, client_w)):
            task = asyncio.create_task(self._pipe(reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


def delete_queue(vhost_url: str, queue: str) -> None:
    """Delete `queue` from the vhost in `vhost_url`, messages and all."""
    rabbitmqctl("delete_queue", "-p", vhost_of(vhost_url), queue)


class ServiceProcess:
    """One of the services (`python -m ingest` / `python -m processor`) in a child process."""

    def __init__(
        self, module: str, env: Mapping[str, str], port: int, *, stderr: Path | None = None
    ) -> None:
        """Prepare `module` with `env` added to this environment, serving HTTP on `port`.

        With `stderr`, the service's standard error (its log lines) goes to that file.
        """
        self.module = module
        self.env = {**os.environ, **env}
        self.port = port
        self.stderr = stderr
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """Its HTTP address."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "ServiceProcess":
        """Start it and wait until `/health/live` answers."""
        with contextlib.ExitStack() as files:
            stderr = files.enter_context(self.stderr.open("ab")) if self.stderr else None
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stderr=stderr,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.process.returncode}")
            health = f"{self.base_url}/health/live"
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(health, timeout=1),  # noqa: S310 - our own http URL
            ):
                return self
            time.sleep(0.1)
        raise TimeoutError(f"{self.module} did not become live in {timeout} s")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` and wait; return the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> "ServiceProcess":
        """Start the service."""
        return self.start()

    def __exit__(self, *_: object) -> None:
        """Stop the service."""
        self.stop()


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# The machine's shared Redis for tests; each test keeps to its own key prefix.
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL)


class RedisServer:
    """A throw-away `redis-server` (no persistence) in a child process, for outage tests."""

    def __init__(self) -> None:
        """Prepare a server on a free port; `start()` runs it."""
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The Redis URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        """Start (or restart) the server on the same port; wait until it listens."""
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--loglevel", "warning"]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        wait_for_port("127.0.0.1", self.port)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)  # in case a test froze it
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def freeze(self) -> None:
        """Suspend the server (SIGSTOP): connections hang, as with a stuck Redis."""
        assert self.process is not None  # noqa: S101 - a test helper's precondition
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Resume a frozen server."""
        assert self.process is not None  # noqa: S101 - a test helper's precondition
        self.process.send_signal(signal.SIGCONT)

    def __enter__(self) -> "RedisServer":
        """Start the server."""
        return self.start()

    def __exit__(self, *_: object) -> None:
        """Stop the server."""
        self.stop()
