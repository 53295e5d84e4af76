"""Account rules with no I/O: email and password policy, tokens, the argon2id hasher, refreshes.

Tokens are opaque random strings, kept only as their SHA-256 (as tenant API tokens are), not
signed ones: every use is one indexed lookup the tenant API already pays for its own tokens,
and a logout, a password reset or a removed tenant takes effect at the next request rather
than when a signature expires, with no signing key to keep and rotate. Each kind has its own
prefix, so a token pasted in the wrong place is refused before any lookup.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

ACCESS_PREFIX = "cma_"
REFRESH_PREFIX = "cmr_"
LINK_PREFIX = "cml_"
TokenKind = Literal["access", "refresh"]
LinkPurpose = Literal["verify", "reset"]
MAX_EMAIL = 254  # RFC 5321's path limit less the angle brackets
# One @, a dot in the domain, nothing that ends or splits an address in a header (spaces, angle
# brackets, quotes, commas, semicolons): what every mail system delivers to. An apostrophe is a
# letter here (o'brien@example.com).
_EMAIL = re.compile(r"^[^@\s<>\",;]{1,64}@[^@\s<>\",;']+\.[^@\s<>\",;'.]+$")
_TOKEN_BODY = r"[A-Za-z0-9_-]{43}"
_PREFIXES = (ACCESS_PREFIX, REFRESH_PREFIX, LINK_PREFIX)


class PolicyError(ValueError):
    """Input an account cannot take; `field` names where (for a 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def normalize_email(value: object) -> str:
    """The address as it will be stored and mailed: trimmed; case kept, compared without it."""
    if not isinstance(value, str):
        raise PolicyError("email", "email must be a string")
    email = value.strip()
    if len(email) > MAX_EMAIL or not _EMAIL.fullmatch(email):
        raise PolicyError("email", "email is not an email address")
    return email


def email_key(email: str) -> str:
    """What rate limits key an address by: its digest, so Redis never holds addresses."""
    return hashlib.sha256(email.strip().lower().encode("utf-8", "surrogateescape")).hexdigest()


def check_password(value: object, *, email: str, min_length: int, max_length: int) -> str:
    """The password when the policy takes it: long enough, bounded (hashing cost), not the
    email address or its local part."""
    if not isinstance(value, str):
        raise PolicyError("password", "password must be a string")
    if len(value) < min_length:
        raise PolicyError("password", f"password must have at least {min_length} characters")
    if len(value) > max_length:
        raise PolicyError("password", f"password must have at most {max_length} characters")
    lowered = value.strip().lower()
    if lowered in (email.lower(), email.lower().partition("@")[0]):
        raise PolicyError("password", "password must not be the email address")
    return value


def new_token(prefix: str) -> str:
    """A secret for one of the prefixes: 256 random bits, shown once, stored as its SHA-256."""
    if prefix not in _PREFIXES:
        raise ValueError(f"unknown token prefix {prefix!r}")
    return prefix + secrets.token_urlsafe(32)


def looks_like(prefix: str, value: str) -> bool:
    return value.startswith(prefix) and re.fullmatch(_TOKEN_BODY, value[len(prefix) :]) is not None


@dataclass(frozen=True)
class HashCost:
    time_cost: int
    memory_kib: int
    parallelism: int


def hasher(cost: HashCost) -> PasswordHasher:
    """argon2id with the configured cost; salt 16 bytes, hash 32 (argon2-cffi's defaults)."""
    return PasswordHasher(
        time_cost=cost.time_cost,
        memory_cost=cost.memory_kib,
        parallelism=cost.parallelism,
        type=Type.ID,
    )


def password_matches(ph: PasswordHasher, stored_hash: str, password: str) -> bool:
    try:
        return ph.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class StoredToken:
    """A session token row as the refresh decision needs it."""

    kind: str
    expires_at: datetime
    used_at: datetime | None
    session_revoked: bool


RefreshOutcome = Literal["rotate", "reused", "refused"]


def refresh_outcome(token: StoredToken | None, now: datetime) -> RefreshOutcome:
    """A refresh token spends once: a second use means a copy is loose, so the whole session
    goes (OAuth 2.0 Security BCP, refresh token rotation). Expired, revoked or unknown: refused."""
    if token is None or token.kind != "refresh" or token.session_revoked:
        return "refused"
    if token.used_at is not None:
        return "reused"
    if token.expires_at <= now:
        return "refused"
    return "rotate"
