"""Self-service account settings: token lifetimes, link lifetimes, argon2id cost, rate limits.

Emailed links start with the public base URL licenses already use (COLMENA_LICENSE_BASE_URL,
else this ingress's own host and port): one public address per deployment. The argon2id
defaults are RFC 9106's second recommended option (the "low memory" profile argon2-cffi ships
as its default): 3 passes over 64 MiB with 4 lanes. Hashing runs in threads, at most
COLMENA_ACCOUNTS_HASH_CONCURRENCY at once per ingress process, so a login flood costs bounded
memory (that many times the memory cost) and waits instead of exhausting the host.

The rate limits are budgets of their own (rule syntax as COLMENA_RATE_LIMIT_*): each account
action (signup, login, refresh, forgot, reset, verify) has one per client address and one per
email address (or per account, for the actions that carry a token instead), and failed logins
have a smaller budget, per client and per email, spent only by failures.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from colmena.config.rate_limit_settings import RateRule, parse_rule


class AccountsSettings(BaseModel):
    accounts_access_ttl_s: int = Field(
        default=900, ge=60, le=86_400, description="lifetime of an access token (15 min)"
    )
    accounts_refresh_ttl_hours: float = Field(
        default=24 * 30,
        gt=0,
        le=24 * 365,
        description="lifetime of a refresh token; each refresh issues a new one",
    )
    accounts_verify_ttl_hours: float = Field(
        default=48, gt=0, le=24 * 30, description="lifetime of an emailed verification link"
    )
    accounts_reset_ttl_minutes: float = Field(
        default=30, gt=0, le=24 * 60, description="lifetime of an emailed password reset link"
    )
    accounts_password_min_length: int = Field(default=12, ge=8, le=64)
    accounts_password_max_length: int = Field(
        default=128, ge=64, le=1024, description="longer passwords are refused (hashing cost)"
    )
    accounts_argon2_time_cost: int = Field(default=3, ge=1, le=20)
    accounts_argon2_memory_kib: int = Field(default=65_536, ge=8 * 1024, le=1024 * 1024)
    accounts_argon2_parallelism: int = Field(default=4, ge=1, le=16)
    accounts_hash_concurrency: int = Field(
        default=2, ge=1, le=64, description="password hashes computed at once per process"
    )
    accounts_rate_per_client: str = Field(
        default="20/10min burst 10", description="each account action, per client address"
    )
    accounts_rate_per_email: str = Field(
        default="5/10min burst 5", description="each account action, per email (or account)"
    )
    accounts_login_failures: str = Field(
        default="5/15min burst 5", description="failed logins, per client and per email"
    )

    @field_validator(
        "accounts_rate_per_client", "accounts_rate_per_email", "accounts_login_failures"
    )
    @classmethod
    def _check_accounts_rule(cls, value: str) -> str:
        parse_rule(value)
        return value

    @property
    def accounts_client_rule(self) -> RateRule | None:
        """None when 'off'."""
        return parse_rule(self.accounts_rate_per_client)

    @property
    def accounts_email_rule(self) -> RateRule | None:
        return parse_rule(self.accounts_rate_per_email)

    @property
    def accounts_failure_rule(self) -> RateRule | None:
        return parse_rule(self.accounts_login_failures)
