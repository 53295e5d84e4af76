"""Tenant rules with no I/O: API tokens, masked keys, bot config validation, plan changes.

A config is validated twice over: its shape (pydantic: symbols, mode, capital as a decimal
string) and then the tenant's plan (how many symbols, whether live trading is allowed, how much
capital the bot may trade). Both report field errors the HTTP layer turns into a 422. When a
plan shrinks, `fit_to_plan` drops what can be dropped (live mode, extra symbols); capital is not
lowered behind the tenant's back, so a bot over the new plan's capital is stopped instead
(`capital_over_plan`) and its next config must fit. A plan change from the payments side is
decided here too: stale ones (older provider time than the change already applied) are ignored,
and a plan ending only downgrades the tenant when it is the plan the tenant is on.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

TOKEN_PREFIX = "cmt_"
_TOKEN = re.compile(r"^cmt_[A-Za-z0-9_-]{43}$")
TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
PROVIDER = re.compile(r"^[a-z][a-z0-9_]{1,31}$")
FREE_PLAN = "free"
KEY_MASK = "****"
DEFAULT_CONFIG: dict[str, Any] = {"symbols": ["BTCUSDT"], "mode": "paper", "capital": "100"}
_CAPITAL_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,8})?$"
_ZERO_PATTERN = r"^[0.]*$"  # a capital that matches _CAPITAL_PATTERN and this one is zero
_CAPITAL = re.compile(_CAPITAL_PATTERN)


def new_token() -> str:
    """An API token: shown once, stored only as its SHA-256."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def looks_like_token(value: str) -> bool:
    return bool(_TOKEN.fullmatch(value))


def token_digest(token: str) -> bytes:
    # surrogateescape: aiohttp decodes header bytes that are not UTF-8 that way; any header hashes.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def mask_last4(plaintext: str) -> str:
    """What a tenant may see of a stored provider key; short values reveal nothing."""
    if len(plaintext) <= 8:
        return KEY_MASK
    return KEY_MASK + plaintext[-4:]


def new_tenant_id() -> str:
    return f"t-{secrets.token_hex(6)}"


Symbol = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{2,20}$")]
# The JSON schema of the model is the API's (GET/PUT /api/v1/bot/config), so it states every rule
# the validators below enforce: symbols never repeat, capital is a decimal string above zero.
Capital = Annotated[
    str,
    Field(
        pattern=_CAPITAL_PATTERN,
        description='a decimal string above zero such as "1000.50": up to 12 digits and 8 decimals',
        json_schema_extra={"not": {"pattern": _ZERO_PATTERN}},
    ),
]


class BotConfig(BaseModel):
    """What a tenant may configure; unknown fields are refused rather than silently kept."""

    model_config = ConfigDict(extra="forbid")

    symbols: list[Symbol] = Field(
        min_length=1, max_length=100, json_schema_extra={"uniqueItems": True}
    )
    mode: Literal["paper", "live"]
    capital: Capital

    @field_validator("symbols")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("symbols must not repeat")
        return value

    @field_validator("capital", mode="before")
    @classmethod
    def _decimal_string(cls, value: object) -> str:
        """A string, so no float rounding reaches money; normalised ("0100.50" -> "100.5")."""
        if not isinstance(value, str) or not _CAPITAL.fullmatch(value):
            raise ValueError('capital must be a decimal string such as "1000.50"')
        try:
            amount = Decimal(value)
        except InvalidOperation:
            raise ValueError("capital is not a number") from None
        if amount <= 0:
            raise ValueError("capital must be greater than zero")
        return format(amount.normalize(), "f")


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class ConfigError(ValueError):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class PlanLimits:
    max_symbols: int
    live_allowed: bool
    max_capital: Decimal | None = None  # None: no capital limit


def capital_over_plan(config: dict[str, Any], limits: PlanLimits) -> Decimal | None:
    """The config's capital when it exceeds the plan's limit, else None.

    A bot trades this amount, so colmena never trims it to fit the way it trims symbols: a
    smaller stake is a trading decision only the tenant makes.
    """
    if limits.max_capital is None:
        return None
    try:
        capital = Decimal(str(config.get("capital", "0")))
    except InvalidOperation:
        return None  # only a stored config reaches here, and those were validated
    return capital if capital > limits.max_capital else None


def validate_config(data: Any, plan_name: str, limits: PlanLimits) -> dict[str, Any]:
    """The config as stored, or ConfigError naming every field that is wrong or over the plan."""
    try:
        config = BotConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            [
                FieldError(
                    ".".join(str(part) for part in error["loc"]) or "body",
                    error["msg"].removeprefix("Value error, "),
                )
                for error in exc.errors()
            ]
        ) from None
    errors = []
    if len(config.symbols) > limits.max_symbols:
        errors.append(
            FieldError("symbols", f"plan {plan_name} allows at most {limits.max_symbols} symbol(s)")
        )
    if config.mode == "live" and not limits.live_allowed:
        errors.append(FieldError("mode", f"plan {plan_name} allows paper trading only"))
    if capital_over_plan(config.model_dump(), limits) is not None:
        errors.append(
            FieldError(
                "capital",
                f"plan {plan_name} allows a capital of at most {_plain(limits.max_capital)}",
            )
        )
    if errors:
        raise ConfigError(errors)
    return config.model_dump()


def _plain(amount: Decimal | None) -> str:
    return format(amount.normalize(), "f") if amount is not None else "any"


def fit_to_plan(config: dict[str, Any], limits: PlanLimits) -> dict[str, Any]:
    """A config a downgraded plan allows: live trading stops, extra symbols are dropped."""
    fitted = dict(config)
    if fitted.get("mode") == "live" and not limits.live_allowed:
        fitted["mode"] = "paper"
    symbols = list(fitted.get("symbols") or [])
    if len(symbols) > limits.max_symbols:
        fitted["symbols"] = symbols[: limits.max_symbols]
    return fitted


@dataclass(frozen=True)
class PlanDecision:
    outcome: Literal["applied", "stale", "ignored"]
    reason: str
    plan: str | None = None


def decide_plan_change(
    *,
    current_plan: str,
    current_source: str | None,
    current_at: datetime | None,
    plan: str,
    active: bool,
    source: str,
    provider_at: datetime,
) -> PlanDecision:
    """What one apply_plan message does to a tenant (pure; the caller stores the outcome)."""
    if current_at is not None and provider_at < current_at:
        return PlanDecision("stale", f"older than the change applied at {current_at.isoformat()}")
    if active:
        return PlanDecision("applied", f"plan {plan} active ({source})", plan)
    if current_source != source:
        return PlanDecision(
            "ignored", f"{source} ended, but the current plan comes from {current_source}"
        )
    return PlanDecision("applied", f"plan {plan} ended ({source}); back to {FREE_PLAN}", FREE_PLAN)
