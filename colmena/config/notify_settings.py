"""Tenant notification settings: colmena's Telegram bot, webhook delivery limits, SSRF rules.

A tenant's endpoint is someone else's server: each attempt has a short connect and total
timeout, a tenant has at most COLMENA_NOTIFY_TENANT_CONCURRENCY deliveries in flight (the rest
wait without holding a worker thread), and failed attempts are retried with jittered exponential
backoff until COLMENA_NOTIFY_MAX_ATTEMPTS, then the delivery is dead (replayable). Webhook URLs
must be https and must not reach private, loopback or link-local addresses, unless
COLMENA_NOTIFY_ALLOW_HTTP / COLMENA_NOTIFY_ALLOWED_NETWORKS say otherwise (development, tests).
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, Field, SecretStr, field_validator

TELEGRAM_API_URL = "https://api.telegram.org"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """CIDRs (or single addresses) separated by commas; ValueError names the bad one."""
    networks = []
    for part in (item.strip() for item in text.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or network (CIDR)") from None
    return tuple(networks)


class NotifySettings(BaseModel):
    telegram_bot_token: SecretStr | None = Field(
        default=None,
        description="colmena's own Telegram bot (BotFather's token); unset: no Telegram sends",
    )
    telegram_api_url: str = Field(
        default=TELEGRAM_API_URL,
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="Telegram Bot API base URL (tests point it at a local stand-in)",
    )
    notify_connect_timeout_s: float = Field(
        default=3.0, gt=0, le=30, description="connecting to a tenant's endpoint or Telegram"
    )
    notify_timeout_s: float = Field(
        default=10.0, gt=0, le=60, description="one whole delivery attempt, answer included"
    )
    notify_tenant_concurrency: int = Field(
        default=2, ge=1, le=32, description="deliveries in flight per tenant at once"
    )
    notify_max_attempts: int = Field(
        default=8, ge=1, le=50, description="attempts before a delivery is dead"
    )
    notify_backoff_s: float = Field(
        default=5.0, gt=0, le=3600, description="first retry's base delay (doubles, jittered)"
    )
    notify_max_backoff_s: float = Field(
        default=3600.0, gt=0, le=86400, description="cap of one retry's delay"
    )
    notify_keep_days: int = Field(
        default=30, ge=1, le=3650, description="days events and finished deliveries are kept"
    )
    notify_allow_http: bool = Field(
        default=False, description="accept http:// webhook URLs (development and tests only)"
    )
    notify_allowed_networks: str = Field(
        default="",
        description=(
            "comma-separated CIDRs a webhook may reach although private or loopback "
            "(tests: 127.0.0.1/32); empty: only public addresses"
        ),
    )

    @field_validator("notify_allowed_networks")
    @classmethod
    def _check_networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    def notify_networks(self) -> tuple[Network, ...]:
        """The allow-listed networks, parsed."""
        return parse_networks(self.notify_allowed_networks)
