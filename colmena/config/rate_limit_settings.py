"""Rate-limit settings: the shared store, the trusted proxies, a preset and per-group overrides.

Two operator documents asked for different limits ("about 5 requests a minute per client on the
public API, 50 on webhooks" and "10 r/s API, 5 r/s webhooks, with bursts"), so both ship as
presets (`strict`, `burst`); `off` is for benchmarks and fuzzing only. Every route group can
override its preset with a rule such as `10/s burst 20` or `5/15min`, or `off`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator

# Every budget a client has: one per route group, and one for failed authentication.
RATE_GROUPS = (
    "webhooks",
    "tenant_api",
    "admin",
    "downloads",
    "rates",
    "console",
    "public",
    "failed_auth",
)
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_PERIODS_S = {"s": 1, "min": 60, "h": 3600}
_RULE = re.compile(r"^(\d+)\s*/\s*(\d*)\s*(s|min|h)(?:\s+burst\s+(\d+))?$")


@dataclass(frozen=True)
class RateRule:
    """`count` requests per `period_s` on average, up to `burst` at once."""

    count: int
    period_s: float
    burst: int

    @property
    def interval_s(self) -> float:
        """The time one request's allowance takes to come back."""
        return self.period_s / self.count


def parse_rule(text: str) -> RateRule | None:
    """`N/PERIOD [burst B]` (PERIOD: s, min, h, optionally with a number: `5/15min`), or `off`.

    Without `burst`, a burst is as large as one period's count.
    """
    cleaned = text.strip().lower()
    if cleaned == "off":
        return None
    match = _RULE.match(cleaned)
    if match is None:
        raise ValueError(f"expected a rule like '10/s burst 20', '5/15min' or 'off', not {text!r}")
    count, periods, unit, burst = match.groups()
    rule = RateRule(
        count=int(count),
        period_s=float(int(periods or 1) * _PERIODS_S[unit]),
        burst=int(burst) if burst else int(count),
    )
    if rule.count < 1 or rule.period_s <= 0 or rule.burst < 1:
        raise ValueError(f"a rule needs a count, a period and a burst of at least 1: {text!r}")
    return rule


PRESETS: dict[str, dict[str, str]] = {
    "strict": {
        "webhooks": "50/min burst 50",
        "tenant_api": "5/min burst 5",
        "admin": "5/min burst 5",
        "downloads": "5/min burst 5",
        "rates": "5/min burst 5",
        # A person clicking through pages, not a script: a page a second, a few at once.
        "console": "60/min burst 20",
        "public": "5/min burst 5",
        "failed_auth": "5/15min burst 5",
    },
    "burst": {
        "webhooks": "5/s burst 50",
        "tenant_api": "10/s burst 20",
        "admin": "10/s burst 20",
        "downloads": "10/s burst 20",
        "rates": "10/s burst 20",
        "console": "10/s burst 40",
        "public": "10/s burst 20",
        "failed_auth": "10/10min burst 10",
    },
    "off": dict.fromkeys(RATE_GROUPS, "off"),
}


def _rule_field(group: str) -> Any:
    return Field(
        default=None,
        description=f"{group} budget per client, e.g. '10/s burst 20' or 'off'; unset: the preset",
    )


class RateLimitSettings(BaseModel):
    redis_url: SecretStr | None = Field(
        default=None,
        description=(
            "Redis holding the rate-limit budgets shared by every ingress process; unset: each "
            "process keeps its own (one ingress, `colmena dev`)"
        ),
    )
    redis_prefix: str = Field(
        default="colmena:", description="prefix of every Redis key (isolates deployments, tests)"
    )
    redis_timeout_s: float = Field(
        default=0.25,
        gt=0,
        description=(
            "how long a request waits for Redis's answer before this process limits it with its "
            "own budgets (fail open); a dead Redis is then left alone for 2 s"
        ),
    )
    trusted_proxies: str = Field(
        default="",
        description=(
            "comma-separated IPs/CIDRs of the TLS proxies in front of the ingress; only their "
            "X-Forwarded-For is believed"
        ),
    )
    rate_limit_preset: Literal["strict", "burst", "off"] = Field(
        default="burst", description="the limits every group starts from"
    )
    rate_limit_webhooks: str | None = _rule_field("webhooks (each provider its own)")
    rate_limit_tenant_api: str | None = _rule_field("tenant API")
    rate_limit_admin: str | None = _rule_field("admin API")
    rate_limit_downloads: str | None = _rule_field("download pages")
    rate_limit_rates: str | None = _rule_field("rates API")
    rate_limit_console: str | None = _rule_field("console pages (their static files are free)")
    rate_limit_public: str | None = _rule_field("other routes (license status, unknown paths)")
    rate_limit_failed_auth: str | None = _rule_field("failed authentication")
    refusal_delay_s: float = Field(
        default=1.0,
        ge=0,
        le=30,
        description=(
            "a 429 is answered after this long, so a client over its bounds waits instead of "
            "retrying at once; 0 answers at once"
        ),
    )
    refusal_max_held: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description=(
            "refusals held back at once per client address; beyond it a 429 leaves at once "
            "and closes the connection"
        ),
    )

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and urlsplit(value.get_secret_value()).scheme not in (
            "redis",
            "rediss",
            "unix",
        ):
            raise ValueError("expected redis://[:password@]host:6379/0")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        _networks(value)
        return value

    @field_validator(
        "rate_limit_webhooks",
        "rate_limit_tenant_api",
        "rate_limit_admin",
        "rate_limit_downloads",
        "rate_limit_rates",
        "rate_limit_public",
        "rate_limit_failed_auth",
    )
    @classmethod
    def _check_rule(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rule(value)
        return value

    def trusted_proxy_networks(self) -> tuple[IpNetwork, ...]:
        return _networks(self.trusted_proxies)

    def rate_rule(self, group: str) -> RateRule | None:
        """The group's rule: its own setting when set, else the preset's; None means no limit."""
        override: str | None = getattr(self, f"rate_limit_{group}")
        return parse_rule(
            override if override is not None else PRESETS[self.rate_limit_preset][group]
        )


def _networks(text: str) -> tuple[IpNetwork, ...]:
    try:
        return tuple(
            ipaddress.ip_network(item.strip(), strict=False)
            for item in text.split(",")
            if item.strip()
        )
    except ValueError as exc:
        raise ValueError(f"expected IPs or CIDRs separated by commas: {exc}") from None
