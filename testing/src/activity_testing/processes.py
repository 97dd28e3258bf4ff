"""Processes tests start and stop: SecantusDB, a throw-away Redis, the services themselves."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from activity_testing.waiting import wait_until_sync

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# The machine's shared Redis for tests; each test keeps to its own key prefix.
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    """Block until something accepts TCP connections on host:port."""

    def listens() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        return False

    if not wait_until_sync(listens, timeout, interval=0.05):
        raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


def venv_script(name: str) -> str:
    """Path of a console script installed beside the running interpreter."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (run `uv sync --all-packages`)")
    return found


def end_process(
    process: "subprocess.Popen[bytes] | None", sig: signal.Signals, timeout: float
) -> None:
    """Send `sig` to `process` if it still runs and wait `timeout` s for it, then kill it."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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
        end_process(self.process, sig, timeout)

    def __enter__(self) -> "SecantusServer":
        """Start the server."""
        return self.start()

    def __exit__(self, *_: object) -> None:
        """Stop the server."""
        self.stop()


class ServiceProcess:
    """A service in a child process: `python -m <name>` unless `command` says otherwise.

    The one way tests, the benchmark and `make run` start, wait for and stop a service.
    """

    def __init__(
        self,
        name: str,
        env: Mapping[str, str],
        port: int,
        *,
        stderr: Path | None = None,
        command: Sequence[str] | None = None,
        cwd: Path | None = None,
        ready_path: str = "/health/live",
    ) -> None:
        """Prepare the service with `env` added to this environment, serving HTTP on `port`.

        With `stderr`, its log lines (and anything it prints) go to that file, appended.
        `start()` waits until `ready_path` answers 200.
        """
        self.name = name
        self.command = list(command or [sys.executable, "-m", name])
        self.env = {**os.environ, **env}
        self.port = port
        self.stderr = stderr
        self.cwd = cwd
        self.ready_path = ready_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """Its HTTP address."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """Its process id while it runs."""
        return self.process.pid if self.process and self.process.poll() is None else None

    def start(self, timeout: float = 60.0) -> "ServiceProcess":
        """Start it and wait until its `ready_path` answers 200."""
        with contextlib.ExitStack() as files:
            log = files.enter_context(self.stderr.open("ab")) if self.stderr else None
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,  # a baseline's own output too, never the bench's table
                stderr=log,
            )
        process = self.process

        def ready() -> bool:
            if process.poll() is not None:
                code = process.returncode
                raise RuntimeError(f"{self.name} exited with {code}{self._tail()}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.base_url}{self.ready_path}", timeout=1),  # noqa: S310
            ):
                return True
            return False

        if wait_until_sync(ready, timeout, interval=0.1):
            return self
        self.stop()
        raise TimeoutError(
            f"{self.name} did not answer {self.ready_path} in {timeout} s{self._tail()}"
        )

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` and wait (then kill it and its workers); return the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            workers = descendants(self.process.pid)
            end_process(self.process, sig, timeout)
            for pid in workers:  # uvicorn's workers would outlive a killed parent
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        return self.process.returncode

    def tail(self, lines: int = 15) -> str:
        """The last lines of its log file ("" without one)."""
        if self.stderr is None:
            return ""
        try:
            return "\n".join(self.stderr.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _tail(self) -> str:
        tail = self.tail()
        return f":\n{tail}" if tail else ""

    def __enter__(self) -> "ServiceProcess":
        """Start the service."""
        return self.start()

    def __exit__(self, *_: object) -> None:
        """Stop the service."""
        self.stop()


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (its workers), from Linux /proc."""
    found: list[int] = []
    todo = [pid]
    while todo:
        for children in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                below = [int(child) for child in children.read_text().split()]
                found += below
                todo += below
    return found


# A fixture's maker of service processes (`ingest_with` in tests/e2e/conftest.py).
ServiceFactory = Callable[..., ServiceProcess]


class RedisServer:
    """A throw-away `redis-server` (no persistence) in a child process, for outage tests."""

    def __init__(self, password: str | None = None) -> None:
        """Prepare a server on a free port, requiring `password` if given; `start()` runs it."""
        self.port = free_port()
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The Redis URL, with the password when the server requires one."""
        return self.url_with(self.password)

    def url_with(self, password: str | None) -> str:
        """The Redis URL giving `password` (None: none)."""
        credentials = "" if password is None else f":{password}@"
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        """Start (or restart) the server on the same port; wait until it listens."""
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--loglevel", "warning"]
        if self.password is not None:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        wait_for_port("127.0.0.1", self.port)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # in case a test froze it
        end_process(self.process, signal.SIGTERM, timeout)

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
