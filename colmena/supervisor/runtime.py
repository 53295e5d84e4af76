"""What a reconciler needs from something that runs tenants' bots.

Two implementations exist (Docker containers and local processes); the reconciler only sees
this protocol, so it converges desired and actual state the same way on a laptop and in
production. Calls are blocking: async callers run them in a thread. Only the supervisor side
(bots workers, the scheduler, `colmena dev`) holds a runtime; the ingress reads what the bots
wrote from the database, where `log_shipping` copies it.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from colmena.errors import ColmenaError
from colmena.supervisor.key_delivery import KEYS_FILE_ENV

TENANT_LABEL = "colmena.tenant"
INSTANCE_LABEL = "colmena.instance"
CONFIG_VERSION_LABEL = "colmena.config-version"
CONFIG_HASH_LABEL = "colmena.config-hash"

# Environment the bot reads; provider keys never travel in it (see key_delivery).
CONFIG_ENV = "BOT_CONFIG"
CONFIG_VERSION_ENV = "BOT_CONFIG_VERSION"
TENANT_ENV = "BOT_TENANT"


class BotState(enum.StrEnum):
    """Runtime-neutral lifecycle; Docker's finer states map onto these."""

    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class BotLimits:
    """Resource limits from the tenant's plan.

    CPU is counted in millicpus (1000 = one core) to keep it an integer end to end.
    """

    memory_bytes: int
    cpu_millis: int
    pids: int = 64

    @property
    def nano_cpus(self) -> int:
        return self.cpu_millis * 1_000_000


@dataclass(frozen=True)
class BotSpec:
    """Everything needed to create one tenant's bot.

    `env` holds non-secret knobs for the bot (e.g. BOT_HEARTBEAT_SECONDS). `secrets` holds
    decrypted provider keys by provider; the runtime delivers them as the bot's keys file
    (key_delivery), and they are deliberately left out of the environment, `config_hash`,
    labels, logs and `repr`.
    """

    tenant_id: str
    config: Mapping[str, Any]
    config_version: int
    limits: BotLimits
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def config_hash(self) -> str:
        """Changes whenever the bot must be recreated: its config, version or plan limits."""
        canonical = json.dumps(
            {
                "config": self.config,
                "version": self.config_version,
                "limits": [self.limits.memory_bytes, self.limits.cpu_millis, self.limits.pids],
                "env": dict(self.env),
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def environment(self, keys_file: str) -> dict[str, str]:
        """The bot's environment: knobs, config, identity and where its keys file is."""
        env = dict(self.env)
        env[KEYS_FILE_ENV] = keys_file
        env[CONFIG_ENV] = json.dumps(self.config, sort_keys=True, separators=(",", ":"))
        env[CONFIG_VERSION_ENV] = str(self.config_version)
        env[TENANT_ENV] = self.tenant_id
        return env


@dataclass(frozen=True)
class BotStatus:
    """One bot as the runtime sees it.

    `tenant_id` is None for something carrying colmena's instance label but no tenant: the
    reconciler removes those. Exit fields are set only once the bot has exited; an exit code
    above 128 means it died from signal (code - 128), as in a shell. A listing may leave
    `started_at` approximate for running bots (Docker's listing carries the creation time).
    """

    bot_id: str
    tenant_id: str | None
    state: BotState
    config_version: int | None
    config_hash: str | None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    oom_killed: bool = False


class BotNotFound(LookupError):
    """The tenant has no bot in this runtime."""


class BotStartFailed(ColmenaError):
    """The runtime could not start the bot (the engine refused, or its keys could not be
    delivered). Nothing of it is left behind; the message is the engine's, for the tenant."""


class KeysNotDelivered(ColmenaError):
    """A running bot could not take its new keys file (the exec broke, the engine refused).
    Retryable: the bot keeps its old file meanwhile, and the next attempt writes the newest
    keys. Never carries a key."""


@dataclass(frozen=True)
class LogPosition:
    """Where reading one bot's log stopped; what the numbers mean is the runtime's business.

    Docker: `offset` is the timestamp of the last line read (ns since the epoch) and `skip` how
    many lines carrying exactly that timestamp were read. Processes: a byte offset in the log.
    """

    bot_id: str
    offset: int = 0
    skip: int = 0


@dataclass(frozen=True)
class LogEntry:
    logged_at: datetime
    text: str


@dataclass(frozen=True)
class LogBatch:
    """Lines read after a position, and the position to read from next time."""

    entries: list[LogEntry]
    position: LogPosition


class Runtime(Protocol):
    """Runs at most one bot per tenant, labelled so one listing finds them all."""

    def list_bots(self) -> list[BotStatus]:
        """Every bot of this colmena instance, running or not, in one listing."""
        ...

    def start_bot(self, spec: BotSpec) -> BotStatus:
        """Replace whatever the tenant had with a fresh bot built from `spec`, started, its
        keys file in place; raises BotStartFailed, leaving no bot, when it cannot start."""
        ...

    def replace_keys(self, tenant_id: str, keys: Mapping[str, str]) -> bool:
        """Replace the running bot's keys file with `keys` in one rename (the bot reads the
        old file or the new one, never half). False when the tenant has no running bot: its
        next start delivers the keys. Raises KeysNotDelivered when a running bot could not
        take them. Writing the same keys twice changes nothing."""
        ...

    def stop_bot(self, tenant_id: str, timeout_s: int = 10) -> None:
        """Stop the tenant's bot (SIGTERM, then SIGKILL after the timeout) and forget it."""
        ...

    def remove_bot(self, bot_id: str, timeout_s: int = 10) -> None:
        """Like `stop_bot` by id, for bots whose tenant is unknown."""
        ...

    def logs(self, tenant_id: str, tail: int = 100) -> list[str]:
        """The last `tail` lines the bot wrote; raises BotNotFound."""
        ...

    def logs_since(self, bot_id: str, position: LogPosition | None) -> LogBatch:
        """Lines the bot `bot_id` wrote after `position` (from its first line when `position` is
        None or names another bot), a line still being written excepted; raises BotNotFound.
        Reading twice from one position gives the same lines: a caller that stores the new
        position with the lines it kept ships every line once."""
        ...

    def close(self) -> None:
        """Release the runtime's resources."""
        ...
