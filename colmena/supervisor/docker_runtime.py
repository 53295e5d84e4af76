"""Tenants' bots as hardened Docker containers.

One container per tenant, named after it so the engine itself refuses a second one, and
labelled so a single filtered listing returns every bot of this colmena instance. Docker's
own restart policy stays "no": colmena decides about restarts (restart_policy.py) so that
backoff, crashloop and metrics live in one place. Provider keys reach the bot as a file on a
tmpfs, written through an exec's stdin after start and replaced the same way when the tenant's
keys change (key_delivery), so no container config, inspect output or layer on disk holds
them. Blocking SDK calls; async callers use a thread.
"""

from __future__ import annotations

import calendar
import re
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import docker
import structlog
from docker.errors import APIError, DockerException, NotFound
from docker.types import LogConfig

from colmena.supervisor.key_delivery import (
    CONTAINER_KEYS_DIR,
    CONTAINER_KEYS_FILE,
    KEYS_FILE_NAME,
    keys_document,
)
from colmena.supervisor.runtime import (
    CONFIG_HASH_LABEL,
    CONFIG_VERSION_LABEL,
    INSTANCE_LABEL,
    TENANT_LABEL,
    BotNotFound,
    BotSpec,
    BotStartFailed,
    BotState,
    BotStatus,
    KeysNotDelivered,
    LogBatch,
    LogEntry,
    LogPosition,
)

log = structlog.get_logger(__name__)

NOBODY = "65534:65534"
NS_PER_S = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_NUMERIC_USER = re.compile(r"^(\d+):(\d+)$")
# Runs inside the bot as its own user and reads the keys from stdin: the command line holds
# no key. Written under a name of this exec's own ($$: a 0400 leftover of a write that died
# cannot block the next) and renamed over the file, so the bot never reads half a file, also
# when the keys are replaced while it runs (the image needs sh, cat, mv).
_WRITE_KEYS = (
    f'partial="{CONTAINER_KEYS_DIR}/.{KEYS_FILE_NAME}.$$" && umask 377 && cat > "$partial" '
    f'&& mv -f "$partial" {CONTAINER_KEYS_FILE}'
)
KEY_DELIVERY_TIMEOUT_S = 30.0
_EXIT_STATUS = re.compile(r"^Exited \((-?\d+)\)")
_STATES = {
    "running": BotState.RUNNING,
    "created": BotState.CREATED,
    "exited": BotState.EXITED,
    "dead": BotState.EXITED,
}


def docker_available(base_url: str | None = None, timeout_s: int = 3) -> bool:
    """Whether an engine answers; `colmena dev` falls back to local processes otherwise."""
    try:
        client = _connect(base_url, timeout_s)
    except DockerException:
        return False
    try:
        return bool(client.ping())
    except DockerException:
        return False
    finally:
        client.close()


def _connect(base_url: str | None, timeout_s: int) -> docker.DockerClient:
    if base_url is None:
        return docker.from_env(timeout=timeout_s)
    return docker.DockerClient(base_url=base_url, timeout=timeout_s)


class DockerRuntime:
    """Runtime protocol over the Docker Engine API.

    `instance` labels this colmena deployment's bots so that two deployments (or parallel
    test runs) sharing an engine never list, or remove, each other's containers.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        image: str,
        network_mode: str = "none",
        instance: str = "default",
        user: str = NOBODY,
        tmpfs_size: str = "16m",
        log_max_size: str = "10m",
    ) -> None:
        self._client = client
        self._image = image
        self._network_mode = network_mode
        self._instance = instance
        numeric = _NUMERIC_USER.match(user)
        if numeric is None:
            raise ValueError(f"bot user must be numeric uid:gid, not {user!r}")
        self._user = user
        uid, gid = numeric.groups()
        self._tmpfs = {
            "/tmp": f"rw,noexec,nosuid,nodev,size={tmpfs_size}",
            CONTAINER_KEYS_DIR: f"rw,noexec,nosuid,nodev,size=64k,mode=0700,uid={uid},gid={gid}",
        }
        self._log_config = LogConfig(
            type=LogConfig.types.JSON, config={"max-size": log_max_size, "max-file": "2"}
        )

    @property
    def instance(self) -> str:
        return self._instance

    @classmethod
    def connect(
        cls, base_url: str | None = None, *, timeout_s: int = 30, **options: Any
    ) -> DockerRuntime:
        """Open the one client this runtime keeps; None means the environment's engine."""
        return cls(_connect(base_url, timeout_s), **options)

    def close(self) -> None:
        self._client.close()

    def list_bots(self) -> list[BotStatus]:
        """One filtered listing; only bots that have stopped are inspected as well.

        The listing carries no exit time, which the restart backoff needs; stopped bots are
        few, so the cost stays one call per pass plus one per stopped bot.
        """
        rows = self._client.api.containers(
            all=True, filters={"label": [f"{INSTANCE_LABEL}={self._instance}"]}
        )
        bots = []
        for row in rows:
            status = _status_from_listing(row)
            if status.state is BotState.EXITED:
                status = self._inspect_status(row["Id"]) or status
            bots.append(status)
        return bots

    def start_bot(self, spec: BotSpec) -> BotStatus:
        name = self._name(spec.tenant_id)
        self._stop_and_remove(name, timeout_s=10)
        api = self._client.api
        limits = spec.limits
        host_config = api.create_host_config(
            mem_limit=limits.memory_bytes,
            memswap_limit=limits.memory_bytes,
            nano_cpus=limits.nano_cpus,
            pids_limit=limits.pids,
            read_only=True,
            tmpfs=self._tmpfs,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            network_mode=self._network_mode,
            restart_policy={"Name": "no"},
            log_config=self._log_config,
        )
        created = api.create_container(
            self._image,
            name=name,
            user=self._user,
            environment=spec.environment(CONTAINER_KEYS_FILE),
            labels={
                INSTANCE_LABEL: self._instance,
                TENANT_LABEL: spec.tenant_id,
                CONFIG_VERSION_LABEL: str(spec.config_version),
                CONFIG_HASH_LABEL: spec.config_hash,
            },
            host_config=host_config,
        )
        container_id: str = created["Id"]
        try:
            api.start(container_id)
        except APIError as exc:
            self._stop_and_remove(container_id, timeout_s=0)
            raise BotStartFailed(_engine_message(exc)) from exc
        self._deliver_keys(container_id, keys_document(spec.secrets))
        log.info(
            "bot_started",
            tenant_id=spec.tenant_id,
            container_id=container_id[:12],
            config_version=spec.config_version,
        )
        status = self._inspect_status(container_id)
        if status is None:
            raise BotNotFound(spec.tenant_id)
        return status

    def _deliver_keys(self, container_id: str, document: bytes) -> None:
        """Write the keys file of a bot just started.

        A bot that already exited is left as it is: the reconciler sees a crash. A running bot
        that cannot take its keys (an image without sh, cat or mv) is removed: a failed start.
        """
        try:
            self._write_keys(container_id, document)
        except KeysNotDelivered as exc:
            if not self._running(container_id):
                return
            self._stop_and_remove(container_id, timeout_s=0)
            raise BotStartFailed(str(exc)) from exc

    def replace_keys(self, tenant_id: str, keys: Mapping[str, str]) -> bool:
        """Replace the keys file of the tenant's running container, through the same exec.

        A bot that stops meanwhile needs nothing (its next start writes the file); a running
        one that cannot take the file keeps running with its old keys, and the caller retries.
        """
        name = self._name(tenant_id)
        if not self._running(name):
            return False
        try:
            self._write_keys(name, keys_document(keys))
        except KeysNotDelivered:
            if not self._running(name):
                return False
            raise
        log.info("bot_keys_replaced", tenant_id=tenant_id, providers=len(keys))
        return True

    def _write_keys(self, ref: str, document: bytes) -> None:
        """Write the keys file inside the running bot, through stdin of an exec as its user;
        KeysNotDelivered (saying what the engine or the exec said, never a key) otherwise."""
        api = self._client.api
        try:
            exec_id = api.exec_create(
                ref, ["/bin/sh", "-c", _WRITE_KEYS], stdin=True, user=self._user
            )["Id"]
            stream = api.exec_start(exec_id, socket=True)
            raw: socket.socket = getattr(stream, "_sock", stream)
            try:
                raw.sendall(document)
                raw.shutdown(socket.SHUT_WR)
                output = _read_all(raw)
            finally:
                stream.close()
            code = self._exec_exit_code(exec_id)
        except (APIError, OSError) as exc:  # OSError: the exec's stream broke or timed out
            said = _engine_message(exc) if isinstance(exc, APIError) else str(exc)
            raise KeysNotDelivered(f"keys not delivered: {said}") from exc
        if code != 0:
            said = _demux(output).decode("utf-8", errors="replace").strip()[-300:]
            raise KeysNotDelivered(f"keys not delivered (exit {code}): {said}")

    def _exec_exit_code(self, exec_id: str) -> int | None:
        deadline = time.monotonic() + KEY_DELIVERY_TIMEOUT_S
        while True:
            found = self._client.api.exec_inspect(exec_id)
            if not found["Running"] or time.monotonic() > deadline:
                code: int | None = found["ExitCode"]
                return code
            time.sleep(0.05)

    def _running(self, container_id: str) -> bool:
        status = self._inspect_status(container_id)
        return status is not None and status.state is BotState.RUNNING

    def stop_bot(self, tenant_id: str, timeout_s: int = 10) -> None:
        self._stop_and_remove(self._name(tenant_id), timeout_s)
        log.info("bot_stopped", tenant_id=tenant_id)

    def remove_bot(self, bot_id: str, timeout_s: int = 10) -> None:
        self._stop_and_remove(bot_id, timeout_s)
        log.info("bot_removed", container_id=bot_id[:12])

    def logs(self, tenant_id: str, tail: int = 100) -> list[str]:
        try:
            raw: bytes = self._client.api.logs(self._name(tenant_id), tail=tail)
        except NotFound as exc:
            raise BotNotFound(tenant_id) from exc
        return raw.decode("utf-8", errors="replace").splitlines()

    def logs_since(self, bot_id: str, position: LogPosition | None) -> LogBatch:
        resume = position if position is not None and position.bot_id == bot_id else None
        options: dict[str, Any] = {"timestamps": True}
        if resume is not None:
            # Whole seconds: the engine sends that second's lines again, and the ones already
            # read are dropped by their exact timestamps.
            options["since"] = max(1, resume.offset // NS_PER_S)
        try:
            raw: bytes = self._client.api.logs(bot_id, **options)
        except NotFound as exc:
            raise BotNotFound(bot_id) from exc
        return _lines_after(raw.decode("utf-8", errors="replace"), bot_id, resume)

    def _name(self, tenant_id: str) -> str:
        if not _TENANT_ID.match(tenant_id):
            raise ValueError(f"tenant id {tenant_id!r} cannot name a container")
        return f"colmena-{self._instance}-{tenant_id}"

    def _stop_and_remove(self, ref: str, timeout_s: int) -> None:
        api = self._client.api
        try:
            api.stop(ref, timeout=timeout_s)
            api.remove_container(ref, force=True)
        except NotFound:
            return
        except APIError as exc:
            # 409: the engine is already removing it, which is what we want.
            if exc.status_code != 409:
                raise

    def _inspect_status(self, ref: str) -> BotStatus | None:
        try:
            attrs = self._client.api.inspect_container(ref)
        except NotFound:
            return None
        labels = attrs["Config"].get("Labels") or {}
        state = attrs["State"]
        bot_state = _STATES.get(state["Status"], BotState.UNKNOWN)
        exited = bot_state is BotState.EXITED
        return BotStatus(
            bot_id=attrs["Id"],
            tenant_id=labels.get(TENANT_LABEL),
            state=bot_state,
            config_version=_int_or_none(labels.get(CONFIG_VERSION_LABEL)),
            config_hash=labels.get(CONFIG_HASH_LABEL),
            started_at=_docker_time(state.get("StartedAt")),
            finished_at=_docker_time(state.get("FinishedAt")) if exited else None,
            exit_code=state.get("ExitCode") if exited else None,
            oom_killed=bool(state.get("OOMKilled")),
        )


def _engine_message(exc: APIError) -> str:
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", errors="replace")
    return str(explanation or exc)[:500]


def _read_all(raw: socket.socket) -> bytes:
    """What the exec said (multiplexed stdout and stderr, headers and all), until it ends."""
    raw.settimeout(KEY_DELIVERY_TIMEOUT_S)
    chunks = []
    while chunk := raw.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def _demux(stream: bytes) -> bytes:
    """The payload of the engine's multiplexed stream (8-byte frame headers, no TTY)."""
    payload, at = [], 0
    while at + 8 <= len(stream):
        size = int.from_bytes(stream[at + 4 : at + 8], "big")
        payload.append(stream[at + 8 : at + 8 + size])
        at += 8 + size
    return b"".join(payload)


def _lines_after(text: str, bot_id: str, resume: LogPosition | None) -> LogBatch:
    """The timestamped lines after `resume`, and the position after the last of them."""
    offset, skip = (resume.offset, resume.skip) if resume is not None else (0, 0)
    last, count, seen = offset, skip, 0
    entries = []
    for record in text.split("\n"):
        stamp, _, line = record.partition(" ")
        at = _nanos(stamp)
        if at is None or at < offset:
            continue
        if at == offset and seen < skip:
            seen += 1
            continue
        entries.append(LogEntry(_EPOCH + timedelta(microseconds=at // 1000), line))
        if at > last:
            last, count = at, 1
        elif at == last:
            count += 1
    return LogBatch(entries, LogPosition(bot_id, last, count))


def _nanos(stamp: str) -> int | None:
    """Nanoseconds since the epoch of the engine's RFC 3339 UTC stamp (trailing zeros trimmed)."""
    whole, _, fraction = stamp.removesuffix("Z").partition(".")
    if not stamp.endswith("Z") or (fraction and not fraction.isdigit()):
        return None
    try:
        seconds = calendar.timegm(datetime.fromisoformat(whole).timetuple())
    except ValueError:
        return None
    return seconds * NS_PER_S + int(fraction.ljust(9, "0")[:9])


def _status_from_listing(row: dict[str, Any]) -> BotStatus:
    labels = row.get("Labels") or {}
    bot_state = _STATES.get(row.get("State", ""), BotState.UNKNOWN)
    exit_match = _EXIT_STATUS.match(row.get("Status", ""))
    return BotStatus(
        bot_id=row["Id"],
        tenant_id=labels.get(TENANT_LABEL),
        state=bot_state,
        config_version=_int_or_none(labels.get(CONFIG_VERSION_LABEL)),
        config_hash=labels.get(CONFIG_HASH_LABEL),
        started_at=_unix_time(row.get("Created")) if bot_state is BotState.RUNNING else None,
        exit_code=int(exit_match.group(1)) if exit_match else None,
    )


def _unix_time(value: object) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if isinstance(value, int) and value > 0 else None


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


def _docker_time(value: str | None) -> datetime | None:
    """Docker's RFC 3339 with nanoseconds; its zero time means "never"."""
    if not value or value.startswith("0001-"):
        return None
    stamp, _, fraction = value.rstrip("Z").partition(".")
    micros = (fraction + "000000")[:6]
    return datetime.fromisoformat(f"{stamp}.{micros}").replace(tzinfo=UTC)
