"""A throwaway three-node RabbitMQ cluster built from the machine's own RabbitMQ binaries.

Why not the machine's broker: a cluster test kills and restarts nodes, and the shared node on
5672 (rabbit@localhost, epmd on 4369) serves every other test. Each cluster here has node names
unique to the run, its own AMQP and distribution ports, its own epmd (ERL_EPMD_PORT) started by
us, its own Erlang cookie (HOME) and its own config, env, data and log files under `base_dir`, so
it can neither reach nor be reached by the shared node. Every OS process it starts is in a
process group of its own and is killed on exit, after a failure or at interpreter exit.

Formation: the first node boots alone; the others find it through classic-config peer discovery
on their first boot (a blank data dir) and join. A restarted node rejoins from its own data dir.
The AMQP user may log in from any address (`loopback_users = none`), so processes in network
namespaces reach the nodes over a bridge.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import pika
import pika.exceptions

from bench.common import figure, free_port

RABBIT_BIN = Path(os.environ.get("COLMENA_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
EPMD = os.environ.get("COLMENA_EPMD", "epmd")
USER = "colmena"
HEARTBEAT_S = 10
BOOT_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0


class ClusterError(RuntimeError):
    """The cluster could not be started as asked; the message says which node and why."""


@dataclass
class _Node:
    name: str  # Erlang node name, e.g. c1a2b3n1@localhost
    port: int
    dist_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.directory / "log" / f"{self.name}.log"


def _group_kill(process: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    """Signal the whole process group (wrapper shell, beam.smp, erl_child_setup, helpers)."""
    if process is None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


class RabbitCluster:
    """`with RabbitCluster(tmp_path) as cluster:` gives `nodes` running, clustered nodes.

    `urls` are AMQP URLs (heartbeat set, a non-loopback user), one per node, in node order.
    `kill(i)` SIGKILLs node i's processes; `start(i)` brings it back and waits until it serves.
    """

    def __init__(self, base_dir: Path | str, nodes: int = 3, bind: str = "127.0.0.1") -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.base_dir = Path(base_dir)
        self.bind = bind
        self.run_id = uuid.uuid4().hex[:6]
        self.password = secrets.token_hex(12)
        self.epmd_port = free_port()
        self.home = self.base_dir / "home"
        self._epmd: subprocess.Popen[bytes] | None = None
        self._nodes = [
            _Node(
                name=f"c{self.run_id}n{index + 1}@localhost",
                port=free_port(),
                dist_port=free_port(),
                directory=self.base_dir / f"node{index + 1}",
            )
            for index in range(nodes)
        ]
        self.boot_seconds: float | None = None

    # -- the interface ---------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return [self.url(index) for index in range(len(self._nodes))]

    def url(self, index: int) -> str:
        host = self.bind if self.bind not in ("0.0.0.0", "") else "127.0.0.1"
        return (
            f"amqp://{USER}:{quote(self.password, safe='')}@{host}:{self._nodes[index].port}"
            f"/%2F?heartbeat={HEARTBEAT_S}"
        )

    def node_name(self, index: int) -> str:
        return self._nodes[index].name

    def __enter__(self) -> RabbitCluster:
        atexit.register(self._kill_all)
        try:
            self._boot()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def kill(self, index: int) -> None:
        """SIGKILL every OS process of node `index` and wait until they are gone."""
        node = self._nodes[index]
        _group_kill(node.process, signal.SIGKILL)
        if node.process is not None:
            node.process.wait(timeout=STOP_TIMEOUT_S)
        node.process = None

    def start(self, index: int) -> None:
        """Start node `index` again (from its data dir, so it rejoins) and wait until it serves."""
        node = self._nodes[index]
        if node.process is not None and node.process.poll() is None:
            raise ClusterError(f"node {node.name} is already running")
        self._spawn(node)
        self._await_amqp(node)

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after STOP_TIMEOUT_S) and the cluster's epmd."""
        for node in self._nodes:
            _group_kill(node.process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for node in self._nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _group_kill(node.process, signal.SIGKILL)
                node.process.wait(timeout=STOP_TIMEOUT_S)
            node.process = None
        self._kill_all()
        atexit.unregister(self._kill_all)

    def ctl(self, index: int, *args: str, timeout: float = 60.0) -> str:
        """Run `rabbitmqctl -n <node i> args...` against this cluster; its stdout."""
        return self._cli("rabbitmqctl", self._nodes[index], *args, timeout=timeout)

    def running_nodes(self, index: int = 0) -> list[str]:
        """The running members as node `index` sees them (`rabbitmqctl cluster_status`)."""
        status = json.loads(self.ctl(index, "cluster_status", "--formatter", "json"))
        return sorted(status["running_nodes"])

    def queue_details(self, index: int = 0) -> dict[str, tuple[str, dict[str, Any]]]:
        """Every queue of the cluster: its type (classic, quorum) and declared arguments, as
        node `index` lists them (`rabbitmqctl list_queues`: no management plugin needed)."""
        rows = json.loads(
            self.ctl(index, "list_queues", "name", "type", "arguments", "--formatter", "json")
        )
        return {
            row["name"]: (row["type"], {key: value for key, _kind, value in row["arguments"]})
            for row in rows
        }

    # -- machinery -------------------------------------------------------------------------

    def _boot(self) -> None:
        started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o600)
        self._start_epmd()
        first, *others = self._nodes
        self._spawn(first)
        self._await_amqp(first)
        for node in others:
            self._spawn(node)
        for node in others:
            self._await_amqp(node)
        expected = sorted(node.name for node in self._nodes)
        if (running := self.running_nodes()) != expected:
            raise ClusterError(f"cluster formed as {running}, expected {expected}")
        self.boot_seconds = time.monotonic() - started

    def _start_epmd(self) -> None:
        self._epmd = subprocess.Popen(
            [EPMD, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._await_port(self.epmd_port, "epmd", self._epmd)

    def _env(self, node: _Node) -> dict[str, str]:
        """Everything that tells RabbitMQ's scripts which node this is; nothing of the machine's
        own configuration (/etc/rabbitmq) is read."""
        directory = node.directory
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.home),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_PORT": str(node.port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(directory / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_PID_FILE": str(directory / "pid"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(directory / "plugins-expand"),
            # Distribution on loopback only; two schedulers per node keep three nodes light.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                "-kernel inet_dist_use_interface {127,0,0,1} +S 2:2 +A 16"
            ),
        }

    def _config(self, node: _Node) -> str:
        lines = [
            f"listeners.tcp.1 = {self.bind}:{node.port}",
            "loopback_users = none",
            f"default_user = {USER}",
            f"default_pass = {self.password}",
            "log.console = false",
            "log.file.level = info",
        ]
        first = self._nodes[0]
        if node is not first:
            lines += [
                "cluster_formation.peer_discovery_backend = classic_config",
                f"cluster_formation.classic_config.nodes.1 = {first.name}",
            ]
        return "\n".join(lines) + "\n"

    def _spawn(self, node: _Node) -> None:
        for sub in ("mnesia", "log", "plugins-expand"):
            (node.directory / sub).mkdir(parents=True, exist_ok=True)
        (node.directory / "rabbitmq.conf").write_text(self._config(node))
        (node.directory / "advanced.config").write_text("[].\n")
        (node.directory / "enabled_plugins").write_text("[].\n")
        (node.directory / "rabbitmq-env.conf").write_text("# this node's settings come from env\n")
        (node.directory / "pid").unlink(missing_ok=True)
        with open(node.directory / "server.out", "ab") as out:
            node.process = subprocess.Popen(
                [str(RABBIT_BIN / "rabbitmq-server")],
                env=self._env(node),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _await_port(self, port: int, what: str, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 10.0
        while True:
            if process.poll() is not None:
                raise ClusterError(f"{what} exited with {process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise ClusterError(f"{what} not listening on {port} within 10s") from None
                time.sleep(0.05)

    def _await_amqp(self, node: _Node) -> None:
        """Until the node accepts an AMQP login (its last boot step), or fail with its log."""
        index = self._nodes.index(node)
        parameters = pika.URLParameters(self.url(index))
        parameters.socket_timeout = 2
        parameters.connection_attempts = 1
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while True:
            if node.process is None or node.process.poll() is not None:
                raise ClusterError(f"node {node.name} exited during boot:\n{self._tail(node)}")
            try:
                pika.BlockingConnection(parameters).close()
                return
            except pika.exceptions.AMQPError:
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"node {node.name} did not accept AMQP within {BOOT_TIMEOUT_S}s:\n"
                        f"{self._tail(node)}"
                    ) from None
                time.sleep(0.2)

    def _tail(self, node: _Node, lines: int = 30) -> str:
        found = []
        for path in (node.directory / "server.out", node.log_file):
            if path.exists():
                found += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(found)

    def _cli(self, tool: str, node: _Node, *args: str, timeout: float) -> str:
        done = subprocess.run(
            [str(RABBIT_BIN / tool), "-n", node.name, *args],
            env=self._env(node),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise ClusterError(
                f"{tool} {' '.join(args)} on {node.name} failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace').strip()}"
            )
        return done.stdout.decode()

    def _kill_all(self) -> None:
        for node in self._nodes:
            _group_kill(node.process, signal.SIGKILL)
        _group_kill(self._epmd, signal.SIGKILL)
        if self._epmd is not None:
            self._epmd.wait(timeout=STOP_TIMEOUT_S)
            self._epmd = None


def main() -> None:
    """`python -m bench.cluster.rabbitmq`: how long a cluster takes to form, and a killed node
    to come back (figures for bench/REPORT.md)."""
    with tempfile.TemporaryDirectory(prefix="rabbit-cluster-") as base:
        with RabbitCluster(base) as cluster:
            figure("rabbit cluster of 3 formed", cluster.boot_seconds or 0.0, "s")
            cluster.kill(1)
            started = time.monotonic()
            cluster.start(1)
            figure("rabbit node restarted after SIGKILL", time.monotonic() - started, "s")


if __name__ == "__main__":
    main()
