"""How operator commands find a running `colmena dev`: a runtime file in its data directory.

`colmena dev` writes `<COLMENA_DATA_DIR>/dev-stack.json` once it serves, and removes it when it
stops. An operator command in a second terminal, in the same directory and with no COLMENA_*
variables, reads it to reach the same database, broker and ingress, with the same dev keys.

The file holds a database URL (a local socket, no password), the broker URL when dev runs on
RabbitMQ, and the token of the dev control routes (dead letters and queue depths of the
in-process broker). It is therefore written with mode 0600 and read only when it belongs to the
current user and nobody else can read it. It is refused when stale: its process is gone, or the
pid now belongs to another process (its start time differs).
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import SecretStr

from colmena.config.settings import Settings, SettingsError, load_settings

STACK_FILE = "dev-stack.json"
# The product `colmena dev` seeds and `colmena trigger` buys by default.
SAMPLE_PRODUCT = "colmena-enterprise"


class StaleDevStack(SettingsError):
    """A runtime file is there but its `colmena dev` is not: say so rather than use it."""


@dataclass(frozen=True)
class DevStack:
    """What a running `colmena dev` tells the operator commands of the same directory."""

    pid: int
    process_started: str
    database_url: str
    broker_url: str | None
    ingress_url: str
    control_token: str
    # Base URL of each provider sandbox the dev process serves, by provider ("mercadopago", ...),
    # so `colmena trigger` talks to the API the running server uses.
    sandboxes: dict[str, str] = field(default_factory=dict)


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None if it is not running.

    Together with the pid it names one process: a pid reused after a crash has another one.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses; the fields after its ")" are
    # plain, and the start time is field 22, the 20th after it.
    return stat.rsplit(")", 1)[1].split()[19]


def new_dev_stack(
    *,
    database_url: str,
    broker_url: str | None,
    ingress_url: str,
    sandboxes: dict[str, str] | None = None,
) -> DevStack:
    """The stack description of this process, with a fresh control token."""
    pid = os.getpid()
    started = process_start_time(pid)
    if started is None:
        raise RuntimeError("this process cannot read its own /proc entry")
    return DevStack(
        pid=pid,
        process_started=started,
        database_url=database_url,
        broker_url=broker_url,
        ingress_url=ingress_url,
        control_token=secrets.token_urlsafe(32),
        sandboxes=dict(sandboxes or {}),
    )


def write_dev_stack(data_dir: Path, stack: DevStack) -> Path:
    """Publish `stack` atomically, readable by this user only."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / STACK_FILE
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=f".{STACK_FILE}-", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(stack), f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def remove_dev_stack(data_dir: Path, stack: DevStack) -> None:
    """Remove the file if it is still this stack's (a newer dev may have replaced it)."""
    path = data_dir / STACK_FILE
    try:
        current = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return
    if current.get("pid") == stack.pid and current.get("control_token") == stack.control_token:
        path.unlink(missing_ok=True)


def read_dev_stack(data_dir: Path) -> DevStack | None:
    """The running dev stack of `data_dir`; None when there is none; StaleDevStack when the file
    is there but unusable."""
    path = data_dir / STACK_FILE
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise StaleDevStack(
            f"{path} is not private to this user (owner {info.st_uid}, mode "
            f"{oct(info.st_mode & 0o777)}): refusing it; remove it and restart `colmena dev`"
        )
    try:
        stack = DevStack(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise StaleDevStack(f"{path} is unreadable ({exc}); remove it") from None
    if process_start_time(stack.pid) != stack.process_started:
        raise StaleDevStack(
            f"{path} is stale: the `colmena dev` that wrote it (pid {stack.pid}) is no longer "
            "running; start `colmena dev` again (or set COLMENA_DATABASE_URL)"
        )
    return stack


def operator_settings(settings: Settings) -> tuple[Settings, DevStack | None]:
    """Settings for an operator command: as configured, or those of the dev stack running here.

    Explicit configuration wins: with COLMENA_DATABASE_URL set, no runtime file is read.
    """
    if settings.database_url is not None:
        return settings, None
    stack = read_dev_stack(Path(settings.data_dir))
    if stack is None:
        return settings, None
    update: dict[str, object] = {"env": "dev", "database_url": SecretStr(stack.database_url)}
    if stack.broker_url is not None:
        update["broker_url"] = SecretStr(stack.broker_url)
    return settings.model_copy(update=update), stack


def load_operator_settings() -> Settings:
    """`load_settings()` for operator commands: with no database configured, the dev stack's."""
    return operator_settings(load_settings())[0]
