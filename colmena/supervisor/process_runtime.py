"""Tenants' bots as local processes, for `colmena dev` when no Docker engine answers.

Same protocol and bot script as the container runtime, weaker isolation: rlimits bound the
bot's memory and CPU time, a new session lets a stop reach the bot's children, and each
tenant gets one log file that the health check and the log shipper read like container output.
Provider keys reach the bot as a 0400 file in a private memory-backed directory whose path is in
BOT_KEYS_FILE (key_delivery), replaced there in one rename when the tenant's keys change; the
file goes when the bot exits or is stopped. Bots live as long
as this object's owner: `close()` stops them all, and the reconciler starts them again on the
next run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog

from colmena.supervisor.key_delivery import (
    keys_document,
    memory_backed_dir,
    remove_keys_file,
    replace_keys_file,
    write_keys_file,
)
from colmena.supervisor.runtime import (
    BotNotFound,
    BotSpec,
    BotStartFailed,
    BotState,
    BotStatus,
    LogBatch,
    LogEntry,
    LogPosition,
)

log = structlog.get_logger(__name__)

_TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_MAX_READ_BYTES = 4 * 1024 * 1024  # per logs_since call; the rest comes with the next
# Environment a shell needs to find its tools; nothing else of colmena's own leaks through.
_BASE_ENV = ("PATH", "LANG", "TZ")


@dataclass
class _Bot:
    bot_id: str
    spec: BotSpec
    process: subprocess.Popen[bytes]
    log_path: Path
    keys_file: Path
    started_at: datetime
    finished_at: datetime | None = None
    # Held while the keys file is replaced or removed: a replacement racing the bot's exit
    # must not leave a file behind in a directory that is being removed.
    keys_lock: threading.Lock = field(default_factory=threading.Lock)


class ProcessRuntime:
    """Runtime protocol over local subprocesses running the bot script.

    Limits set before the script runs: address space (the plan's memory), CPU seconds per
    run (a spinning bot is killed, then restarted with backoff like any crash), no core
    files and a bounded number of open files; the bot also gets a lower scheduling priority.
    The shell's `ulimit` sets them rather than a `preexec_fn`, which can deadlock the child
    when the parent has threads, and callers run this runtime from worker threads.
    RLIMIT_NPROC is deliberately not set: it counts every process of the user, not of the
    bot, so any useful value would break either the bot or the developer's session.
    """

    def __init__(
        self,
        script: Path,
        log_dir: Path,
        *,
        shell: Sequence[str] = ("/bin/sh",),
        cpu_seconds: int = 600,
        open_files: int = 256,
        niceness: int = 10,
    ) -> None:
        self._script = script
        self._log_dir = log_dir
        self._shell = tuple(shell)
        self._cpu_seconds = cpu_seconds
        self._open_files = open_files
        self._niceness = niceness
        self._bots: dict[str, _Bot] = {}
        self._lock = threading.Lock()
        self._keys_base = memory_backed_dir()
        log_dir.mkdir(parents=True, exist_ok=True)

    def list_bots(self) -> list[BotStatus]:
        with self._lock:
            bots = list(self._bots.values())
        return [_status(bot) for bot in bots]

    def start_bot(self, spec: BotSpec) -> BotStatus:
        log_path = self._log_path(spec.tenant_id)
        self.stop_bot(spec.tenant_id)
        keys_file = write_keys_file(self._keys_base, keys_document(spec.secrets))
        env = {name: os.environ[name] for name in _BASE_ENV if name in os.environ}
        env.update(spec.environment(str(keys_file)))
        # A fresh log per run, as a new container has: an old heartbeat must not vouch
        # for the new process.
        try:
            with log_path.open("wb") as log_file:
                process = subprocess.Popen(
                    self._command(spec.limits.memory_bytes),
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self._log_dir,
                    start_new_session=True,
                )
        except OSError as exc:
            remove_keys_file(keys_file)
            raise BotStartFailed(f"{self._shell[0]}: {exc.strerror or exc}") from exc
        os.setpriority(os.PRIO_PROCESS, process.pid, self._niceness)
        bot = _Bot(
            bot_id=f"proc-{uuid.uuid4().hex[:12]}",
            spec=spec,
            process=process,
            log_path=log_path,
            keys_file=keys_file,
            started_at=datetime.now(UTC),
        )
        with self._lock:
            self._bots[spec.tenant_id] = bot
        threading.Thread(target=_reap, args=(bot,), daemon=True, name=f"reap-{bot.bot_id}").start()
        log.info(
            "bot_started",
            tenant_id=spec.tenant_id,
            pid=process.pid,
            config_version=spec.config_version,
        )
        return _status(bot)

    def stop_bot(self, tenant_id: str, timeout_s: int = 10) -> None:
        with self._lock:
            bot = self._bots.pop(tenant_id, None)
        if bot is not None:
            _terminate(bot.process, timeout_s)
            with bot.keys_lock:
                remove_keys_file(bot.keys_file)
            log.info("bot_stopped", tenant_id=tenant_id)

    def replace_keys(self, tenant_id: str, keys: Mapping[str, str]) -> bool:
        """Rewrite the running bot's keys file in its private directory, in one rename."""
        with self._lock:
            bot = self._bots.get(tenant_id)
        if bot is None:
            return False
        with bot.keys_lock:
            # Asked under the lock: once the bot has exited, its directory is gone or going.
            if bot.process.poll() is not None:
                return False
            replace_keys_file(bot.keys_file, keys_document(keys))
        log.info("bot_keys_replaced", tenant_id=tenant_id, providers=len(keys))
        return True

    def remove_bot(self, bot_id: str, timeout_s: int = 10) -> None:
        with self._lock:
            tenant_id = next((t for t, b in self._bots.items() if b.bot_id == bot_id), None)
        if tenant_id is not None:
            self.stop_bot(tenant_id, timeout_s)

    def logs(self, tenant_id: str, tail: int = 100) -> list[str]:
        bot = self._bot(tenant_id)
        with bot.log_path.open("rb") as handle:
            lines = deque(handle, maxlen=tail) if tail > 0 else ()
        return [line.decode("utf-8", errors="replace").rstrip("\n") for line in lines]

    def logs_since(self, bot_id: str, position: LogPosition | None) -> LogBatch:
        bot = self._bot_by_id(bot_id)
        start = position.offset if position is not None and position.bot_id == bot_id else 0
        # Asked before reading: once the bot has exited, everything it wrote is in the file.
        exited = bot.process.poll() is not None
        with bot.log_path.open("rb") as handle:
            handle.seek(start)
            chunk = handle.read(_MAX_READ_BYTES)
        end = chunk.rfind(b"\n") + 1
        if exited and len(chunk) < _MAX_READ_BYTES:
            end = len(chunk)  # an exited bot's last words need no newline
        elif end == 0 and len(chunk) == _MAX_READ_BYTES:
            end = len(chunk)  # one enormous line, taken in pieces
        lines = chunk[:end].removesuffix(b"\n").split(b"\n") if end else []
        now = datetime.now(UTC)
        entries = [LogEntry(now, line.decode("utf-8", errors="replace")) for line in lines]
        return LogBatch(entries, LogPosition(bot_id, start + end))

    def keys_file(self, tenant_id: str) -> Path:
        """Where the bot's keys file is (or was), for tests that look at it from outside."""
        return self._bot(tenant_id).keys_file

    def pid(self, tenant_id: str) -> int:
        """The bot's process id, for operators and tests that act on it from outside."""
        return self._bot(tenant_id).process.pid

    def close(self) -> None:
        with self._lock:
            tenants = list(self._bots)
        for tenant_id in tenants:
            self.stop_bot(tenant_id)

    def _bot(self, tenant_id: str) -> _Bot:
        with self._lock:
            bot = self._bots.get(tenant_id)
        if bot is None:
            raise BotNotFound(tenant_id)
        return bot

    def _bot_by_id(self, bot_id: str) -> _Bot:
        with self._lock:
            bot = next((b for b in self._bots.values() if b.bot_id == bot_id), None)
        if bot is None:
            raise BotNotFound(bot_id)
        return bot

    def _log_path(self, tenant_id: str) -> Path:
        if not _TENANT_ID.match(tenant_id):
            raise ValueError(f"tenant id {tenant_id!r} cannot name a log file")
        return self._log_dir / f"{tenant_id}.log"

    def _command(self, memory_bytes: int) -> list[str]:
        """The shell limits itself, then becomes the bot script (limits survive exec)."""
        limit_then_exec = (
            'ulimit -v "$1" && ulimit -t "$2" && ulimit -c 0 && ulimit -n "$3" '
            '&& shift 3 && exec "$@"'
        )
        return [
            *self._shell,
            "-c",
            limit_then_exec,
            "colmena-bot",
            str(memory_bytes // 1024),
            str(self._cpu_seconds),
            str(self._open_files),
            *self._shell,
            str(self._script),
        ]


def _reap(bot: _Bot) -> None:
    """Record the exit time as it happens (the restart backoff counts from it); the keys file
    goes with the bot."""
    bot.process.wait()
    bot.finished_at = datetime.now(UTC)
    with bot.keys_lock:
        remove_keys_file(bot.keys_file)


def _terminate(process: subprocess.Popen[bytes], timeout_s: int) -> None:
    """SIGTERM the bot's whole session, then SIGKILL it, like `docker stop`."""
    if process.poll() is not None:
        # Already reaped: its pid may belong to someone else by now.
        return
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def _status(bot: _Bot) -> BotStatus:
    code = bot.process.poll()
    if code is None:
        state, exit_code = BotState.RUNNING, None
    else:
        # Report signals as a shell (and Docker) does: 128 + signal number.
        state, exit_code = BotState.EXITED, code if code >= 0 else 128 - code
    return BotStatus(
        bot_id=bot.bot_id,
        tenant_id=bot.spec.tenant_id,
        state=state,
        config_version=bot.spec.config_version,
        config_hash=bot.spec.config_hash,
        started_at=bot.started_at,
        finished_at=(bot.finished_at or datetime.now(UTC)) if code is not None else None,
        exit_code=exit_code,
    )
