"""The one place configuration comes from: `COLMENA_*` environment variables and `.env`.

Each domain keeps its fields in its own mixin module so that a feature adds a file rather than
editing a shared list; `Settings` combines them. Errors are turned into `SettingsError`, whose
message names the variable, because the CLI prints it as one line and exits 2 instead of showing a
traceback to an operator.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from colmena.config.accounts_settings import AccountsSettings
from colmena.config.backup_settings import BackupSettings
from colmena.config.billing_settings import BillingSettings
from colmena.config.bitso_settings import BitsoSettings
from colmena.config.bots_settings import BotsSettings
from colmena.config.cancellation_settings import CancellationSettings
from colmena.config.checkout_settings import CheckoutSettings
from colmena.config.console_settings import ConsoleSettings
from colmena.config.database_url import parse_database_url
from colmena.config.license_settings import LicenseSettings
from colmena.config.notify_settings import NotifySettings
from colmena.config.payments_settings import PaymentsSettings
from colmena.config.rate_limit_settings import RateLimitSettings
from colmena.config.rates_settings import RatesSettings
from colmena.config.receiving_settings import ReceivingSettings
from colmena.config.reports_settings import ReportsSettings
from colmena.config.stamping_settings import StampingSettings


class SettingsError(Exception):
    """Configuration that cannot work; the message is meant to be printed as is."""


def _postgres_url(value: str) -> str:
    parse_database_url(value)
    return value


def _amqp_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise ValueError(
            "expected amqp://user:password@host:5672/vhost, or several such URLs separated by "
            "commas (one per cluster node)"
        )
    return value


BrokerUrls = str | Sequence[str]  # one amqp URL, several separated by commas, or a list of them


def amqp_urls(value: BrokerUrls) -> list[str]:
    """The node URLs of a COLMENA_BROKER_URL value: one amqp URL, or one per cluster node
    separated by commas (a comma inside a password is written %2C). Each is checked."""
    urls = [url.strip() for url in value.split(",")] if isinstance(value, str) else list(value)
    if not urls or not all(urls):
        raise ValueError("empty broker URL in the list (two commas, or one at an end?)")
    return [_amqp_url(url) for url in urls]


class Settings(
    BaseSettings,
    PaymentsSettings,
    BitsoSettings,
    LicenseSettings,
    RatesSettings,
    StampingSettings,
    BotsSettings,
    RateLimitSettings,
    AccountsSettings,
    CheckoutSettings,
    BillingSettings,
    ReceivingSettings,
    CancellationSettings,
    ReportsSettings,
    ConsoleSettings,
    BackupSettings,
    NotifySettings,
):
    """Every knob colmena reads. Unset URLs select the embedded parts in `colmena dev`.

    Domain fields come from mixins (`colmena/config/*_settings.py`) listed among the bases.
    """

    model_config = SettingsConfigDict(
        env_prefix="COLMENA_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: SecretStr | None = Field(
        default=None,
        description=(
            "PostgreSQL URL; list a primary and its standbys (h1:5432,h2:5432) to fail over to "
            "whichever is writable (target_session_attrs=read-write, the default); unset in "
            "`colmena dev` means embedded PostgreSQL"
        ),
    )
    broker_url: SecretStr | None = Field(
        default=None,
        description=(
            "RabbitMQ URL, or one URL per cluster node separated by commas: publishers and "
            "consumers connect to the first node that answers and fail over to the next; unset "
            "in `colmena dev` means the in-process broker"
        ),
    )
    queue_prefix: str = Field(
        default="", description="prefix for every queue name (isolates test runs)"
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)
    data_dir: Path = Path("./.colmena")
    env: str = Field(default="production", pattern="^(production|dev)$")
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    body_read_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="a request body must arrive within this (else 408)"
    )
    db_pool_min: int = Field(default=1, ge=0)
    db_pool_max: int = Field(default=10, ge=1)

    worker_processes: int = Field(default=2, ge=1)
    worker_threads: int = Field(default=8, ge=1)
    worker_prefetch: int = Field(default=1, ge=1, description="unacked messages per worker thread")
    quorum_queues: bool = Field(
        default=False, description="declare quorum queues (RabbitMQ cluster)"
    )
    metrics_port: int = Field(default=9191, ge=1, le=65535, description="worker metrics port")
    ingress_metrics_port: int = Field(
        default=9193,
        ge=1,
        le=65535,
        description="the ingress's /metrics listener (on COLMENA_HTTP_HOST), apart from its API",
    )
    scheduler_metrics_port: int = Field(
        default=9192, ge=1, le=65535, description="scheduler metrics port"
    )
    max_retries: int = Field(default=8, ge=0)
    min_backoff_ms: int = Field(default=1_000, ge=10)
    max_backoff_ms: int = Field(default=300_000, ge=100, le=900_000)
    time_limit_ms: int = Field(default=300_000, ge=1_000, le=900_000)
    relay_interval_s: float = Field(default=2.0, gt=0)
    relay_grace_s: float = Field(
        default=10.0, ge=0, description="age before the relay republishes a row"
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _postgres_url(value.get_secret_value())
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            amqp_urls(value.get_secret_value())
        return value

    def require_database_url(self) -> str:
        """The database URL, for processes that have no embedded fallback."""
        if self.database_url is None:
            raise SettingsError(
                "COLMENA_DATABASE_URL is not set (postgresql://user@host:5432/db, or "
                "postgresql://user@primary:5432,standby:5432/db for a pair)"
            )
        return self.database_url.get_secret_value()

    def require_broker_url(self) -> str:
        """The broker URL as configured (one URL or a comma-separated list), for processes that
        have no in-process fallback; every colmena connection takes it as is."""
        if self.broker_url is None:
            raise SettingsError("COLMENA_BROKER_URL is not set (amqp://user:password@host:5672/)")
        return self.broker_url.get_secret_value()

    def broker_urls(self) -> list[str]:
        """One URL per broker node, in the configured order."""
        return amqp_urls(self.require_broker_url())


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning pydantic's report into one line that names the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise SettingsError(f"invalid setting COLMENA_{field.upper()}: {message}") from None
