"""A PostgreSQL primary with a synchronous streaming standby, from Debian's PostgreSQL 15 binaries.

Tests and benches start their own pair (own data directories, own ports) so a failover can be
rehearsed for real: the primary's postmaster SIGKILLed, the standby promoted, and colmena's
multi-host URL (`target_session_attrs=read-write`) finding the promoted node by itself. The
machine's shared server is never touched.

The servers run as the `postgres` OS user (PostgreSQL refuses root), started by us directly
(`subprocess.Popen(user=...)`), so the postmaster is our child: killing it is one signal and
reaping it is one `wait`. Data directories live in a directory of their own under the temp root,
logs under `base_dir`. Unix sockets are off, so nothing meets the machine's own server's socket
directory and every client talks TCP as a remote host would: on `bind` (and loopback), where
`pg_hba.conf` trusts `samenet`, that is loopback and the subnets the machine is on, such as a
bridge to network-namespace hosts.

The standby is the primary's only synchronous standby (`synchronous_standby_names`,
`synchronous_commit = on`): a commit returns once the standby has flushed its WAL. The standby
itself names no synchronous standby, so once promoted it accepts writes alone: after a failover
a commit is on one node until a new standby is attached. `PostgresSingle` is one server with the
primary's settings and no standby, the baseline bench/pg_sync_cost.py measures against.

    with PostgresPair(tmp_dir) as pair:
        pair.url            # postgresql://postgres@h:p1,h:p2/colmena?target_session_attrs=...
        pair.kill_primary()
        pair.promote_standby()
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from bench.common import free_port

PG_BIN = Path(os.environ.get("COLMENA_PG_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"
STANDBY_NAME = "colmena_standby"
BOOT_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.05


def _wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    """Poll `check()` until it is true; RuntimeError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL_S)


def _binary(name: str) -> str:
    path = PG_BIN / name
    if not path.exists():
        raise RuntimeError(f"{path} not found: install postgresql-15 (or set COLMENA_PG_BIN)")
    return str(path)


def _run_as_postgres(argv: list[str], *, cwd: Path, timeout: float) -> None:
    result = subprocess.run(
        argv,
        user=OS_USER,
        group=OS_USER,
        extra_groups=[],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed: {result.stderr.strip()[-2000:]}")


class PostgresNode:
    """One PostgreSQL server: a data directory, a port and, while it runs, its postmaster."""

    def __init__(self, data_dir: Path, log_file: Path, *, bind: str, name: str) -> None:
        self.data_dir = data_dir
        self.log_file = log_file
        self.bind = bind
        self.name = name
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"{host}:{self.port}"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@{self.address}/{database}"

    def init(self, settings: dict[str, str]) -> None:
        """initdb, then our settings appended to postgresql.conf and a pg_hba.conf of our own."""
        _run_as_postgres(
            [
                _binary("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
            cwd=self.data_dir.parent,
            timeout=BOOT_TIMEOUT_S,
        )
        self.configure(settings)
        (self.data_dir / "pg_hba.conf").write_text(
            "host all all samenet trust\nhost replication all samenet trust\n"
        )

    def configure(self, settings: dict[str, str]) -> None:
        """Append settings to postgresql.conf (later lines win; ALTER SYSTEM still wins)."""
        listen = ",".join(dict.fromkeys(["127.0.0.1", self.bind]))
        lines = {"listen_addresses": listen, "unix_socket_directories": "", **settings}
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# bench.cluster.postgres\n")
            conf.writelines(f"{key} = '{value}'\n" for key, value in lines.items())

    def start(self) -> None:
        """Start the postmaster and wait until it accepts connections."""
        log = self.log_file.open("ab")
        try:
            self.process = subprocess.Popen(
                [_binary("postgres"), "-D", str(self.data_dir), "-p", str(self.port)],
                user=OS_USER,
                group=OS_USER,
                extra_groups=[],
                cwd=self.data_dir,
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        _wait_until(f"{self.name} to accept connections", self._accepting, BOOT_TIMEOUT_S)

    def _accepting(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited at start:\n{self.tail()}")
        ready = subprocess.run(
            [_binary("pg_isready"), "-q", "-h", self.bind, "-p", str(self.port), "-t", "1"],
            check=False,
        )
        return ready.returncode == 0

    def sql(self, query: str, *, database: str = "postgres") -> str:
        """Run one statement with psql; its unaligned output, or RuntimeError with the error."""
        result = subprocess.run(
            [
                _binary("psql"),
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.bind,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                query,
            ],
            env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
            capture_output=True,
            text=True,
            timeout=BOOT_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{self.name}: {query!r} failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def kill(self) -> None:
        """SIGKILL the postmaster, then wait until its orphaned children are gone too.

        Backends notice their postmaster's death and exit by themselves; waiting for that makes
        "killed" mean that nothing of this server can still commit or answer.
        """
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None
        _wait_until(f"{self.name}'s backends to exit", lambda: not self._leftovers(), 30.0)

    def signal_all(self, sig: signal.Signals) -> None:
        """Send `sig` to the postmaster and every process of this server (SIGSTOP: a hung node)."""
        for pid in self._leftovers():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue

    def stop(self) -> None:
        """Immediate shutdown (SIGQUIT): test data needs no checkpoint. SIGKILL if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGKILL)
                self.process.wait()
        self.process = None
        self.signal_all(signal.SIGKILL)
        _wait_until(f"{self.name}'s processes to exit", lambda: not self._leftovers(), 30.0)

    def _leftovers(self) -> list[int]:
        """Processes still working in this data directory (a server's children all do)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if Path(os.readlink(entry / "cwd")) == self.data_dir:
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def tail(self, lines: int = 30) -> str:
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


# The primary's settings; a lone server (the bench's baseline) takes the same, minus the standby.
SERVER_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "4",
    "max_replication_slots": "4",
    "synchronous_standby_names": STANDBY_NAME,
    "synchronous_commit": "on",
    "shared_buffers": "32MB",
}


class _Servers:
    """What a pair and a lone server share: where data and logs go, start, stop, cleanup.

    The data lives apart from `base_dir`, in a directory of the postgres user's own under the
    temp root: pytest's tmp tree is 0700, and every pytest session closes its top again at start.
    """

    def __init__(self, base_dir: Path | str, bind: str, database: str) -> None:
        self.logs = Path(base_dir).resolve() / "postgres"
        self.data_root = Path(tempfile.gettempdir()).resolve() / f"colmena-pg-{uuid.uuid4().hex}"
        self.bind = bind
        self.database = database
        self.nodes: list[PostgresNode] = []
        self.boot_seconds = 0.0

    def _node(self, name: str) -> PostgresNode:
        node = PostgresNode(
            self.data_root / name, self.logs / f"{name}.log", bind=self.bind, name=name
        )
        self.nodes.append(node)
        return node

    def __enter__(self) -> Self:
        atexit.register(self.stop)
        started = time.monotonic()
        try:
            self.logs.mkdir(parents=True, exist_ok=True)
            self.data_root.mkdir(mode=0o700)
            shutil.chown(self.data_root, OS_USER, OS_USER)
            self._boot()
        except BaseException:
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - started
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _boot(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every server and remove their data (their logs stay in base_dir)."""
        atexit.unregister(self.stop)
        for node in reversed(self.nodes):
            node.stop()
        if self.data_root.exists():
            shutil.rmtree(self.data_root)


class PostgresSingle(_Servers):
    """One server with the primary's settings and no standby: what a pair is measured against."""

    def __init__(
        self, base_dir: Path | str, bind: str = "127.0.0.1", *, database: str = "colmena"
    ) -> None:
        super().__init__(base_dir, bind, database)
        self.server = self._node("single")

    @property
    def url(self) -> str:
        return self.server.url(self.database)

    def _boot(self) -> None:
        self.server.init({**SERVER_SETTINGS, "synchronous_standby_names": ""})
        self.server.start()
        self.server.sql(f'CREATE DATABASE "{self.database}"')


class PostgresPair(_Servers):
    """A primary and its synchronous standby; a context manager.

    `url` lists both nodes, primary first, with `target_session_attrs=read-write`, the way an
    operator writes COLMENA_DATABASE_URL for a pair. `primary_url` and `standby_url` name one
    node each by its role at start (after a failover `standby_url` is the writable one).
    """

    def __init__(
        self, base_dir: Path | str, bind: str = "127.0.0.1", *, database: str = "colmena"
    ) -> None:
        super().__init__(base_dir, bind, database)
        self.primary = self._node("primary")
        self.standby = self._node("standby")

    @property
    def url(self) -> str:
        hosts = f"{self.primary.address},{self.standby.address}"
        return f"postgresql://postgres@{hosts}/{self.database}?target_session_attrs=read-write"

    @property
    def primary_url(self) -> str:
        return self.primary.url(self.database)

    @property
    def standby_url(self) -> str:
        return self.standby.url(self.database)

    def _boot(self) -> None:
        self.primary.init(SERVER_SETTINGS)
        self.primary.start()
        _run_as_postgres(
            [
                _binary("pg_basebackup"),
                "-d",
                f"host={self.bind} port={self.primary.port} user=postgres "
                f"application_name={STANDBY_NAME}",
                "-D",
                str(self.standby.data_dir),
                "--wal-method=stream",
                "--write-recovery-conf",
                "--create-slot",
                f"--slot={STANDBY_NAME}",
                "--no-sync",
            ],
            cwd=self.data_root,
            timeout=BOOT_TIMEOUT_S,
        )
        # The copied postgresql.conf names the standby as synchronous; on the standby (and the
        # primary it becomes) nobody answers to that name, so a promoted node would wait forever.
        self.standby.configure({"synchronous_standby_names": ""})
        self.standby.start()
        _wait_until("the standby to stream synchronously", self._in_sync, BOOT_TIMEOUT_S)
        # Only now: before the standby streams, every commit on the primary waits for it.
        self.primary.sql(f'CREATE DATABASE "{self.database}"')

    def _in_sync(self) -> bool:
        state = self.primary.sql(
            "SELECT sync_state FROM pg_stat_replication "
            f"WHERE application_name = '{STANDBY_NAME}' AND state = 'streaming'"
        )
        return state == "sync"

    def kill_primary(self) -> None:
        """SIGKILL the primary's postmaster (and wait until none of its processes is left)."""
        self.primary.kill()

    def freeze_standby(self) -> None:
        """SIGSTOP every process of the standby: it stays connected and acknowledges nothing,
        so commits on the primary wait (`thaw_standby` lets them go)."""
        self.standby.signal_all(signal.SIGSTOP)

    def thaw_standby(self) -> None:
        self.standby.signal_all(signal.SIGCONT)

    def promote_standby(self) -> None:
        """Promote the standby and return once it has committed a write of its own."""
        if self.standby.sql("SELECT pg_promote(true, 60)") != "t":
            raise RuntimeError(f"the standby was not promoted within 60 s:\n{self.standby.tail()}")
        self.standby.sql("SELECT pg_current_xact_id()", database=self.database)
