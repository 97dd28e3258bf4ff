"""Private RabbitMQ nodes of this machine's install, in child processes, for one test.

Each node has its own node name, AMQP and distribution ports, data and log folders, and an
Erlang cookie of the test's own, so it can never reach, let alone join, the machine's node on
5672. Several are clustered with `join_cluster`; plugins and configuration lines are the
test's to choose (for example rabbitmq_prometheus on a port of its own).
"""

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activity_testing.processes import free_port
from activity_testing.waiting import wait_until_sync

# Debian's /usr/sbin/rabbitmq* wrappers switch to the rabbitmq user (and its cookie); the
# scripts they wrap run as whoever calls them, with the environment given here.
DEBIAN_RABBITMQ_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
# Each wait for a node is for a condition; this bounds it.
WITHIN = 90.0
# Node-to-node traffic stays on loopback, as the AMQP listeners do.
LOOPBACK_DISTRIBUTION = "-kernel inet_dist_use_interface {127,0,0,1}"
QUIET_TABLE = ("--no-table-headers", "--quiet")


def rabbitmq_script(name: str) -> str | None:
    """The RabbitMQ script `name` that runs as the calling user, if installed."""
    debian = DEBIAN_RABBITMQ_SCRIPTS / name
    return str(debian) if debian.exists() else shutil.which(name)


def missing_rabbitmq() -> str | None:
    """Why private nodes cannot run here, or None."""
    for script in ("rabbitmq-server", "rabbitmqctl"):
        if rabbitmq_script(script) is None:
            return f"{script} is not installed (apt-get install rabbitmq-server)"
    return None


@dataclass
class RabbitNode:
    """One RabbitMQ node in a child process; its data survives a kill and a restart."""

    name: str
    amqp_port: int
    folder: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the node (again, on the same data after a kill)."""
        log = (self.folder / "stdout.log").open("ab")
        with log:
            self.process = subprocess.Popen(
                [rabbitmq_script("rabbitmq-server") or "rabbitmq-server"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the test run does not reach it
            )

    def kill(self) -> None:
        """SIGKILL: the node crashes, its connections and cluster links drop at once."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    @property
    def running(self) -> bool:
        """Whether its process is alive."""
        return self.process is not None and self.process.poll() is None


class RabbitCluster:
    """Clustered nodes (one or more) of this machine's RabbitMQ install under `folder`."""

    def __init__(
        self,
        folder: Path,
        size: int = 3,
        plugins: Sequence[str] = (),
        config_lines: Sequence[str] = (),
    ) -> None:
        """Prepare `size` nodes with names, ports and folders of their own.

        `plugins` are enabled on every node; `config_lines` are added to each node's
        rabbitmq.conf.
        """
        self.folder = folder
        home = folder / "home"  # the CLI tools and the nodes read the cookie from $HOME
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20).upper())
        cookie.chmod(0o400)
        conf_env = folder / "rabbitmq-env.conf"  # instead of /etc/rabbitmq/rabbitmq-env.conf
        conf_env.write_text("")
        plugins_file = folder / "enabled_plugins"
        plugins_file.write_text(f"[{','.join(plugins)}].\n")
        self.cli_env = {
            **os.environ,
            "HOME": str(home),
            "RABBITMQ_CONF_ENV_FILE": str(conf_env),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        prefix = f"et-{uuid.uuid4().hex[:6]}"
        self.nodes: list[RabbitNode] = []
        for index in range(1, size + 1):
            name = f"{prefix}-c{index}@localhost"
            node_folder = folder / f"c{index}"
            node_folder.mkdir()
            amqp_port, dist_port = free_port(), free_port()
            # As deploy/cluster/rabbitmq.conf, but for 3.10: quorum queues get a member on
            # every node by default there (quorum_cluster_size 3), the key came in 4.1.
            config = node_folder / "rabbitmq.conf"
            config.write_text(
                "\n".join(["cluster_partition_handling = pause_minority", *config_lines]) + "\n"
            )
            env = {
                **self.cli_env,
                "RABBITMQ_NODENAME": name,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(amqp_port),
                "RABBITMQ_DIST_PORT": str(dist_port),
                "RABBITMQ_MNESIA_BASE": str(node_folder / "mnesia"),
                "RABBITMQ_LOG_BASE": str(node_folder / "log"),
                "RABBITMQ_CONFIG_FILE": str(config),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins_file),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": LOOPBACK_DISTRIBUTION,
                # The start script then execs the VM: the process we hold is the node itself.
                "RUNNING_UNDER_SYSTEMD": "true",
            }
            self.nodes.append(RabbitNode(name, amqp_port, node_folder, env))

    def node(self, name: str) -> RabbitNode:
        """The node called `name`."""
        return next(node for node in self.nodes if node.name == name)

    def ctl(self, node: RabbitNode, *args: str, tool: str = "rabbitmqctl") -> str:
        """Run a CLI tool against `node`; raise with its output when it fails."""
        result = subprocess.run(
            [rabbitmq_script(tool) or tool, "-n", node.name, *args],
            env=self.cli_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} on {node.name}: {result.stderr.strip()}")
        return result.stdout

    def ctl_json(self, node: RabbitNode, *args: str) -> Any:
        """A CLI command's JSON output."""
        return json.loads(self.ctl(node, *args, "--formatter", "json"))

    def await_startup(self, node: RabbitNode, within: float = WITHIN) -> None:
        """Block until `node` runs RabbitMQ (it is not known to epmd at first: retry)."""

        def started() -> bool:
            if not node.running:
                raise RuntimeError(f"{node.name} exited: see {node.folder / 'stdout.log'}")
            try:
                self.ctl(node, "await_startup", "--timeout", "10")
            except RuntimeError:
                return False
            return True

        if not wait_until_sync(started, within, interval=0.5):
            self.ctl(node, "await_startup", "--timeout", "10")  # raises, naming the cause

    def start(self) -> None:
        """Start every node, then join the others to the first one."""
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            self.await_startup(node)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
            self.await_startup(node)

    def stop(self) -> None:
        """Kill every node: the data is thrown away with the folder, so no clean stop."""
        for node in self.nodes:
            node.kill()

    def live_node(self, *, besides: str = "") -> RabbitNode:
        """A running node (other than `besides`) to ask about the cluster."""
        return next(node for node in self.nodes if node.running and node.name != besides)

    def running_nodes(self) -> set[str]:
        """The running nodes as the cluster itself sees them."""
        status = self.ctl_json(self.live_node(), "cluster_status")
        return set(status["running_nodes"])

    def queue(self, queue: str) -> dict[str, Any]:
        """`leader`, `members`, `online` and `messages` of a quorum queue in vhost `/`."""
        columns = ("name", "leader", "members", "online", "messages")
        for row in self.ctl_json(self.live_node(), "list_queues", *columns):
            if row["name"] == queue:
                return dict(row)
        return {}

    def consumer_nodes(self, queue: str) -> set[str]:
        """The nodes whose channels consume from `queue`: where its consumers are connected."""
        # The text output, since JSON prints pids without their node (`#PID<12768.1402.0>`).
        output = self.ctl(
            self.live_node(), "list_consumers", "queue_name", "channel_pid", *QUIET_TABLE
        )
        rows = (line.rsplit("\t", 1) for line in output.splitlines() if "\t" in line)
        return {_pid_node(pid) for name, pid in rows if name == queue}


def _pid_node(pid: str) -> str:
    """The node of an Erlang pid as the CLI prints it: `<name@host.1.2.3>`."""
    match = re.match(r"^<(.+@[^.]+)\.", pid)
    if match is None:
        raise ValueError(f"not a pid: {pid!r}")
    return match.group(1)
