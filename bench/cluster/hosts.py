"""Hosts that share nothing but a network: one Linux network namespace per host.

Each host is a namespace with its own loopback and one veth link to a bridge in the root
namespace, so a process in it reaches nothing on this machine's 127.0.0.1: a test that passes
here cannot be leaning on localhost. The machine's PostgreSQL, RabbitMQ and Redis listen only on
127.0.0.1; `Hosts.forward` (or `Hosts.reach`, for a URL) relays `bridge_ip:port` to them from a
thread of the calling process. Services a test starts itself (an SMTP stand-in, a cluster of its
own) can listen on `bridge_ip` directly.

Names carry a run id and a per-run subnet 10.231.<n>.0/24 is chosen under a file lock, so runs
on one machine never collide. Everything is removed on exit, after a failure too; a run that was
SIGKILLed leaves its bridge behind with its owner's pid in the link alias, and the next run with
the same prefix removes it. Needs root and `ip` (iproute2); otherwise `HostsUnavailable`.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.common import LoopThread
from bench.standins.tcp_proxy import TcpProxy

SUPERNET = ipaddress.IPv4Network("10.231.0.0/16")
LOCK_FILE = Path(tempfile.gettempdir(), "colmena-hosts.lock")
ALIAS_MARK = "colmena-hosts owner="
PREFIX_RULE = re.compile(r"^[a-z][a-z0-9]{0,3}$")
NAME_RULE = re.compile(r"^[a-z0-9][a-z0-9-]{0,19}$")
LOOPBACK_NAMES = ("127.0.0.1", "localhost")
RUN_ID_HEX = 5  # stem = prefix (<= 4) + 5 hex: "<stem>h<index>" stays within IFNAMSIZ (15)
MAX_HOSTS = 253  # .2 .. .254 of the /24


class HostsUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no iproute2, or not permitted)."""


def _ip(*args: str, check: bool = True) -> str:
    """Run `ip ARGS`; a failure raises with ip's own message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _ip_json(*args: str) -> list[dict[str, Any]]:
    output = _ip("-j", *args)
    return list(json.loads(output)) if output.strip() else []


def _owner_of_this_process() -> str:
    return f"{os.getpid()}:{_start_ticks(os.getpid())}"


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks: with the pid it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _owner_alive(owner: str) -> bool:
    pid, _, ticks = owner.partition(":")
    return pid.isdigit() and _start_ticks(int(pid)) == ticks


def _namespace_pids(namespace: str) -> list[int]:
    return [int(pid) for pid in _ip("netns", "pids", namespace, check=False).split()]


def _kill_namespace(namespace: str) -> None:
    for pid in _namespace_pids(namespace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """Serialise subnet choice and sweeping among every run on this machine."""
    with LOCK_FILE.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    found: list[ipaddress.IPv4Network] = []
    for link in _ip_json("-4", "addr", "show"):
        for address in link.get("addr_info", []):
            found.append(
                ipaddress.IPv4Network(f"{address['local']}/{address['prefixlen']}", strict=False)
            )
    for route in _ip_json("-4", "route", "show", "table", "all"):
        destination = route.get("dst", "")
        with contextlib.suppress(ValueError):
            found.append(ipaddress.IPv4Network(destination, strict=False))
    return found


def _free_subnet() -> ipaddress.IPv4Network:
    used = _networks_in_use()
    for candidate in list(SUPERNET.subnets(new_prefix=24))[1:]:
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise RuntimeError(f"no free /24 left in {SUPERNET}")


@dataclass
class Host:
    """One machine of the run: a namespace, its address on the bridge, the processes it ran."""

    name: str
    namespace: str
    ip: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def popen(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, **options: Any
    ) -> subprocess.Popen[bytes]:
        """Start `argv` inside this host (`ip netns exec`); options go to `subprocess.Popen`."""
        process: subprocess.Popen[bytes] = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, *argv],
            env=dict(env) if env is not None else None,
            **options,
        )
        self.processes.append(process)
        return process

    def pids(self) -> list[int]:
        """Every process living in this host's namespace, children of ours included."""
        return _namespace_pids(self.namespace)

    def kill(self, timeout_s: float = 10.0) -> None:
        """The host dies: SIGKILL every process in it, and return once none is left."""
        _kill_namespace(self.namespace)
        for process in self.processes:
            process.wait(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while self.pids():
            if time.monotonic() > deadline:
                raise RuntimeError(f"host {self.name}: processes survived SIGKILL: {self.pids()}")
            _kill_namespace(self.namespace)
            time.sleep(0.05)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM what we started (a clean shutdown), then kill whatever is left."""
        running = [process for process in self.processes if process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + timeout_s
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
        self.kill()


class Hosts:
    """`with Hosts("cm") as hosts:` a bridge at `hosts.bridge_ip`; `hosts.add("w1")` a host.

    `prefix` (1-4 lowercase letters or digits, starting with a letter) names this kind of run;
    leftovers of a crashed run with the same prefix are removed on entry.
    """

    def __init__(self, prefix: str = "cm") -> None:
        if not PREFIX_RULE.match(prefix):
            raise ValueError(
                f"prefix {prefix!r}: 1-4 lowercase letters or digits, starting with a letter"
            )
        self.prefix = prefix
        self.stem = prefix + secrets.token_hex(3)[:RUN_ID_HEX]
        self.bridge = f"{self.stem}b"
        self.subnet: ipaddress.IPv4Network | None = None
        self.hosts: list[Host] = []
        self._forwards: LoopThread | None = None
        self._relays: list[TcpProxy] = []
        self._forwarded: dict[tuple[str, int], int] = {}

    @property
    def bridge_ip(self) -> str:
        if self.subnet is None:
            raise RuntimeError("Hosts is not entered")
        return str(self.subnet.network_address + 1)

    def __enter__(self) -> Hosts:
        if os.geteuid() != 0:
            raise HostsUnavailable("network namespaces need root (ip netns)")
        if shutil.which("ip") is None:
            raise HostsUnavailable("iproute2's `ip` is not installed")
        try:
            with _machine_lock():
                self._sweep_stale()
                self.subnet = _free_subnet()
                self._create_bridge()
            self._probe_namespaces()
            self._forwards = LoopThread("hosts-forwards")
        except BaseException as exc:
            self._remove()
            # A refusal means this machine cannot have hosts; anything else is a bug to show.
            if "Operation not permitted" in str(exc):
                raise HostsUnavailable(f"network namespaces are not permitted here: {exc}") from exc
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._remove()

    def add(self, name: str) -> Host:
        """A new host on the bridge, with `lo` up and the next address of the subnet."""
        if self.subnet is None:
            raise RuntimeError("Hosts is not entered")
        if not NAME_RULE.match(name):
            raise ValueError(f"host name {name!r}: up to 20 lowercase letters, digits or '-'")
        if any(host.name == name for host in self.hosts):
            raise ValueError(f"host {name!r} exists already")
        index = len(self.hosts) + 1
        if index > MAX_HOSTS:
            raise ValueError(f"at most {MAX_HOSTS} hosts on one bridge")
        host = Host(name, f"{self.stem}-{name}", str(self.subnet.network_address + 1 + index), [])
        outside, inside = f"{self.stem}h{index}", f"{self.stem}p{index}"
        self.hosts.append(host)
        _ip("netns", "add", host.namespace)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", host.namespace)
        _ip("link", "set", outside, "master", self.bridge, "up")
        _ip("-n", host.namespace, "link", "set", inside, "name", "eth0")
        _ip(
            "-n", host.namespace, "addr", "add", f"{host.ip}/{self.subnet.prefixlen}", "dev", "eth0"
        )
        _ip("-n", host.namespace, "link", "set", "eth0", "up")
        _ip("-n", host.namespace, "link", "set", "lo", "up")
        return host

    def forward(self, target_port: int, *, target_host: str = "127.0.0.1", port: int = 0) -> int:
        """Relay `bridge_ip:port` to `target_host:target_port`; returns the bridge port.

        `port=0` means the target's port number (the bridge address is this run's own, so it
        is free), which keeps URLs the same but for the host. One forward per target.
        """
        if self._forwards is None:
            raise RuntimeError("Hosts is not entered")
        key = (target_host, target_port)
        if key not in self._forwarded:
            relay = TcpProxy(target_host, target_port, listen_host=self.bridge_ip)
            self._forwarded[key] = self._forwards.run(relay.start(port or target_port))
            self._relays.append(relay)
        return self._forwarded[key]

    def reach(self, url: str) -> str:
        """`url` of a loopback service, as the hosts reach it: through a forward on the bridge."""
        parts = urlsplit(url)
        if parts.hostname not in LOOPBACK_NAMES or parts.port is None:
            raise ValueError(
                f"expected a URL of a service on 127.0.0.1 with an explicit port, got "
                f"{parts.scheme}://{parts.hostname}:{parts.port}"
            )
        port = self.forward(parts.port)
        userinfo, at, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}{at}{self.bridge_ip}:{port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def _create_bridge(self) -> None:
        assert self.subnet is not None
        _ip("link", "add", "name", self.bridge, "type", "bridge")
        _ip("link", "set", "dev", self.bridge, "alias", ALIAS_MARK + _owner_of_this_process())
        _ip("addr", "add", f"{self.bridge_ip}/{self.subnet.prefixlen}", "dev", self.bridge)
        _ip("link", "set", "dev", self.bridge, "up")

    def _probe_namespaces(self) -> None:
        """Fail at entry, saying why, rather than at the first `add`."""
        probe = f"{self.stem}-probe"
        _ip("netns", "add", probe)
        _ip("netns", "delete", probe)

    def _sweep_stale(self) -> None:
        """Remove what crashed runs of this prefix left: their owner is gone, or was never set.

        Each kind of name is matched whole (bridge `<stem>b`, veth `<stem>h<i>` or `<stem>p<i>`,
        namespace `<stem>-<host>`), so a longer prefix's live run is never taken for ours.
        """
        stem = rf"({re.escape(self.prefix)}[0-9a-f]{{{RUN_ID_HEX}}})"
        bridge, veth, namespace = (re.compile(stem + end) for end in ("b", r"[hp]\d+", "-.+"))
        live: set[str] = set()
        for link in _ip_json("link", "show", "type", "bridge"):
            if match := bridge.fullmatch(link["ifname"]):
                alias = link.get("ifalias", "")
                if alias.startswith(ALIAS_MARK) and _owner_alive(alias.removeprefix(ALIAS_MARK)):
                    live.add(match.group(1))
                else:
                    _ip("link", "delete", link["ifname"], check=False)
        for line in _ip("netns", "list").splitlines():
            name = line.split(" ", 1)[0]
            if (match := namespace.fullmatch(name)) and match.group(1) not in live:
                _kill_namespace(name)
                _ip("netns", "delete", name, check=False)
        for link in _ip_json("link", "show", "type", "veth"):
            if (match := veth.fullmatch(link["ifname"])) and match.group(1) not in live:
                _ip("link", "delete", link["ifname"], check=False)

    def _remove(self) -> None:
        """Stop every host, then remove namespaces, links and the bridge; best effort each."""
        for host in self.hosts:
            with contextlib.suppress(Exception):
                host.stop()
        if self._forwards is not None:
            for relay in self._relays:
                self._forwards.run(relay.cut())
            self._forwards.close()
            self._forwards = None
            self._relays.clear()
        for index, host in enumerate(self.hosts, start=1):
            _kill_namespace(host.namespace)
            _ip("netns", "delete", host.namespace, check=False)
            _ip("link", "delete", f"{self.stem}h{index}", check=False)
        _ip("link", "delete", self.bridge, check=False)
