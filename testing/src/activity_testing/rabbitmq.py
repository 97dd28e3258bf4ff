"""RabbitMQ for tests: a virtual host per test, queue depths, outages, a stalling proxy.

The shared node is never stopped: faults are injected per vhost.
"""

import asyncio
import contextlib
import subprocess
import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aio_pika

DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
RABBITMQ_USER = "guest"


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


def new_vhost_name() -> str:
    """A name no other vhost has: the tests' prefix and a random suffix."""
    return f"event-tracker-test-{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def rabbit_vhost(base_url: str = DEFAULT_RABBITMQ_URL) -> Iterator[str]:
    """A fresh RabbitMQ virtual host for one test; deleted afterwards with all it holds."""
    vhost = new_vhost_name()
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, RABBITMQ_USER, ".*", ".*", ".*")
        yield with_vhost(base_url, vhost)
    finally:
        rabbitmqctl("delete_vhost", vhost)


# Each `rabbitmqctl` call starts an Erlang VM (about a second of CPU), whatever it does; one
# `rabbitmqctl eval` call makes or deletes many vhosts for the price of one.
ACTING_USER = "event-tracker-tests"


def _binary(text: str) -> str:
    # Only our own names reach here (letters, digits, dashes, `.*`): nothing to escape.
    return f'<<"{text}">>'


def _binaries(names: Sequence[str]) -> str:
    return "[" + ", ".join(map(_binary, names)) + "]"


def add_vhosts(names: Sequence[str]) -> None:
    """Create the vhosts `names`, each with every permission for the test user, in one call."""
    actor, user, everything = _binary(ACTING_USER), _binary(RABBITMQ_USER), _binary(".*")
    rabbitmqctl(
        "eval",
        f"[begin ok = rabbit_vhost:add(V, {actor}), "
        f"ok = rabbit_auth_backend_internal:set_permissions({user}, V, "
        f"{everything}, {everything}, {everything}, {actor}) end || V <- {_binaries(names)}], ok.",
    )


def delete_vhosts(names: Sequence[str]) -> None:
    """Delete the vhosts `names` with all they hold, in one call."""
    rabbitmqctl(
        "eval",
        f"[ok = rabbit_vhost:delete(V, {_binary(ACTING_USER)}) || V <- {_binaries(names)}], ok.",
    )


class VhostPool:
    """Fresh vhosts for tests, made `batch` at a time in one `rabbitmqctl` call.

    Each vhost serves one test only. When that test ends, a background thread deletes it
    with all it holds, together with any others given back meanwhile (one call for them
    all), while the next test goes on; `close()` waits for those deletions, raises if one
    failed, and deletes the vhosts never handed out.
    """

    def __init__(self, base_url: str = DEFAULT_RABBITMQ_URL, batch: int = 8) -> None:
        """Hand out vhosts of the node at `base_url`; nothing is made before the first."""
        self.base_url = base_url
        self.batch = batch
        self._fresh: list[str] = []
        self._used: list[str] = []
        self._lock = threading.Lock()
        self._deleter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vhost-deleter")
        self._deletions: list[Future[None]] = []

    @contextlib.contextmanager
    def vhost(self) -> Iterator[str]:
        """A URL on a fresh vhost of the caller's own; the vhost is deleted afterwards."""
        if not self._fresh:
            names = [new_vhost_name() for _ in range(self.batch)]
            add_vhosts(names)
            self._fresh = names
        vhost = self._fresh.pop()
        try:
            yield with_vhost(self.base_url, vhost)
        finally:
            with self._lock:
                self._used.append(vhost)
            self._deletions.append(self._deleter.submit(self._delete_used))

    @property
    def waiting(self) -> tuple[str, ...]:
        """The vhosts made and not yet handed out."""
        return tuple(self._fresh)

    def _delete_used(self) -> None:
        with self._lock:
            names, self._used = self._used, []
        if names:
            delete_vhosts(names)

    def close(self) -> None:
        """Wait for the deletions under way (raising if one failed); delete the unused vhosts."""
        self._deleter.shutdown(wait=True)
        try:
            for deletion in self._deletions:
                deletion.result()
        finally:
            if self._fresh:
                delete_vhosts(self._fresh)
                self._fresh = []


def with_credentials(url: str, user: str, password: str) -> str:
    """`url` logging in as `user` with `password`."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


@contextlib.contextmanager
def rabbit_user(password: str) -> Iterator[str]:
    """A RabbitMQ user of one test's own, with `password` and no permissions; deleted after."""
    user = f"event-tracker-test-{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_user", user, password)
    try:
        yield user
    finally:
        rabbitmqctl("delete_user", user)


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


def allow_declaring(vhost_url: str, allowed: bool) -> None:
    """Let the test user declare queues in the vhost of `vhost_url`, or not.

    Reading and writing stay allowed: a missing queue then stays missing, whoever tries to
    declare it again, while publishes still reach the broker (and come back unroutable).
    """
    configure = ".*" if allowed else "^$"
    rabbitmqctl("set_permissions", "-p", vhost_of(vhost_url), RABBITMQ_USER, configure, ".*", ".*")


async def ready_messages(vhost_url: str, queue: str) -> int:
    """Messages ready in a queue, as the queue itself counts them now.

    A passive declare: unlike `rabbitmqctl list_queues`, whose quorum-queue figures lag,
    this is the queue's own count at this moment.
    """
    connection = await aio_pika.connect(vhost_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0
