"""Tenant bot settings: which runtime runs the bots, how it supervises them, who may administer.

Defaults work in `colmena dev`: the runtime is chosen by whether a Docker engine answers, the
bot image is imported from the packaged script when none is named, provider keys are encrypted
with a key generated once under COLMENA_DATA_DIR, and `colmena dev` makes the key pair that
seals provider keys on their way from the ingress to the supervisor. Production sets
COLMENA_SECRET_KEYS and COLMENA_KEY_SEAL_PRIVATE_KEY on the bots workers only,
COLMENA_KEY_SEAL_PUBLIC_KEY on the ingress (`colmena keys keygen` makes the pair) and, for the
admin routes, COLMENA_BOT_ADMIN_TOKEN.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, SecretStr, field_validator

ADMIN_TOKEN_MIN_LENGTH = 32


class BotsSettings(BaseModel):
    if TYPE_CHECKING:
        data_dir: Path  # declared by Settings

    bot_runtime: str = Field(
        default="auto",
        pattern="^(auto|docker|process)$",
        description="auto: Docker when an engine answers, else local processes (dev only)",
    )
    docker_url: str | None = Field(
        default=None, description="Docker engine URL; unset: DOCKER_HOST or the local socket"
    )
    bot_image: str | None = Field(
        default=None, description="bot image; unset: import the sample busybox bot"
    )
    bot_network: str = Field(
        default="bridge", description="network mode of bot containers (tests use none)"
    )
    bot_instance: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$",
        description="label value separating this deployment's bots from others on one engine",
    )
    bot_log_dir: Path | None = Field(
        default=None, description="process runtime logs; default <COLMENA_DATA_DIR>/bots"
    )
    bot_heartbeat_seconds: int = Field(default=10, ge=1, le=30)
    secret_keys: SecretStr | None = Field(
        default=None,
        description="Fernet keys, comma-separated, newest first; unset in dev means generated",
    )
    key_seal_public_key: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{43}$",
        description="X25519 public key the ingress seals provider keys to (`colmena keys keygen`)",
    )
    key_seal_private_key: SecretStr | None = Field(
        default=None,
        description="its private key, on the bots workers only: they open what the ingress sealed",
    )
    bot_admin_token: SecretStr | None = Field(
        default=None, description="Bearer token of the /api/v1/admin routes"
    )
    bot_restart_max: int = Field(
        default=5, ge=1, description="restarts within the window before crashloop"
    )
    bot_restart_window_seconds: float = Field(default=600.0, gt=0)
    bot_restart_backoff_seconds: float = Field(
        default=10.0, gt=0, description="first restart delay, doubled per crash"
    )
    bot_restart_max_backoff_seconds: float = Field(default=300.0, gt=0)
    bot_unhealthy_restart_seconds: float = Field(
        default=120.0,
        gt=0,
        description="a running bot without a recent heartbeat this long is restarted (policy)",
    )
    bot_reconcile_interval_seconds: float = Field(default=30.0, gt=0, le=3600)
    bot_reconcile_concurrency: int = Field(
        default=8, ge=1, le=64, description="tenants reconciled at once"
    )
    bot_stop_timeout_seconds: int = Field(default=10, ge=0, le=120)
    bot_sse_max_streams_per_tenant: int = Field(default=2, ge=1, le=20)
    bot_sse_max_seconds: float = Field(
        default=3600.0, gt=0, description="a log stream is closed after this long"
    )
    bot_sse_keepalive_seconds: float = Field(default=15.0, gt=0, le=300)
    bot_sse_poll_seconds: float = Field(
        default=1.0, gt=0, le=60, description="a log stream looks for new lines this often"
    )
    tenant_max_requests: int = Field(
        default=4,
        ge=1,
        le=64,
        description="one tenant's requests served at once per ingress process, streams aside "
        "(keep below COLMENA_DB_POOL_MAX)",
    )
    tenant_max_commands_in_flight: int = Field(
        default=5, ge=1, le=100, description="one tenant's bot commands not yet done"
    )
    tenant_max_key_writes: int = Field(
        default=2, ge=1, le=20, description="one tenant's key writes at once per ingress process"
    )
    tenant_max_log_reads: int = Field(
        default=2, ge=1, le=20, description="one tenant's log reads at once per ingress process"
    )
    tenant_db_acquire_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="a tenant request waits this long at most for a database connection (503)",
    )
    bot_log_ship_interval_seconds: float = Field(
        default=2.0, ge=1, le=300, description="bots' new log lines are copied to the database"
    )
    bot_log_max_lines: int = Field(
        default=10_000, ge=1, le=1_000_000, description="log lines kept per tenant (newest)"
    )

    @field_validator(
        "docker_url",
        "bot_image",
        "secret_keys",
        "key_seal_public_key",
        "key_seal_private_key",
        "bot_admin_token",
        mode="before",
    )
    @classmethod
    def _blank_bot_setting_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("bot_admin_token")
    @classmethod
    def _admin_token_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        """It opens every tenant's bot: short enough to guess is not a token."""
        if value is not None and len(value.get_secret_value()) < ADMIN_TOKEN_MIN_LENGTH:
            raise ValueError(
                f"must be at least {ADMIN_TOKEN_MIN_LENGTH} characters "
                "(`openssl rand -hex 32` makes one)"
            )
        return value

    @property
    def bot_log_path(self) -> Path:
        return self.bot_log_dir or Path(self.data_dir, "bots")
