"""Console session rules with no I/O: secrets, their digests, timeouts, when to record a visit.

A session's secret lives only in the browser's cookie; the database keeps its SHA-256, as it
does for API tokens. A session ends at the first of two limits (OWASP session management): idle
(no request for `idle_s`) and absolute (`absolute_s` after login, however busy). Recording each
request's time would cost a write per page view, so a visit is recorded only when the last one
is older than TOUCH_INTERVAL_S; the idle timeout is then enforced to within that interval.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

TOUCH_INTERVAL_S = 60.0
SECRET_BYTES = 32
# An admin's name: what audit rows carry after "admin:"; lower case so two names never differ
# only by case.
ADMIN_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
SessionState = Literal["live", "idle", "expired"]


def new_secret() -> str:
    """A cookie value or CSRF token: 256 random bits, url-safe."""
    return secrets.token_urlsafe(SECRET_BYTES)


def session_digest(secret: str) -> bytes:
    """What the database keys a session by."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def same_secret(given: str | None, expected: str | None) -> bool:
    """Constant-time equality of two secrets; a missing one never matches."""
    if not given or not expected:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


@dataclass(frozen=True)
class SessionTimes:
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


def opened_at(now: datetime, absolute_s: float) -> SessionTimes:
    """The times of a session opened `now`."""
    return SessionTimes(now, now, now + timedelta(seconds=absolute_s))


def session_state(times: SessionTimes, now: datetime, *, idle_s: float) -> SessionState:
    """`expired` past the absolute limit, `idle` past the idle one, else `live`."""
    if now >= times.expires_at:
        return "expired"
    if now - times.last_seen_at >= timedelta(seconds=idle_s):
        return "idle"
    return "live"


def needs_touch(times: SessionTimes, now: datetime) -> bool:
    """Whether this request's time should be written (at most once a TOUCH_INTERVAL_S)."""
    return now - times.last_seen_at >= timedelta(seconds=TOUCH_INTERVAL_S)


def check_admin_name(name: str) -> str:
    if not ADMIN_NAME.fullmatch(name):
        raise ValueError(
            "an admin name is 1 to 63 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name
