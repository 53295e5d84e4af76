"""What the account routes share: bounded password hashing, emails sent after the answer, the
accounts' rate-limit budgets, and their security log lines.

Hashing: argon2id in threads (argon2-cffi releases the GIL), at most
COLMENA_ACCOUNTS_HASH_CONCURRENCY at once, so the event loop keeps answering and memory stays
bounded. An unknown email at login is checked against a hash of the same cost, so it costs
what a known one does.

Email goes out in a task after the answer: the answer is the same whichever email (or none) is
sent, and takes no longer for one than for another. A send that fails is logged, not retried:
the link it carried is stored only as a digest, so nothing could resend it later; signing up
again (unverified) or asking for another reset sends a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import structlog
from aiohttp import web

from colmena.config import Settings
from colmena.config.metrics import SECURITY_EVENTS
from colmena.config.rate_limit_settings import RateRule
from colmena.domain.accounts import HashCost, email_key, hasher, password_matches
from colmena.gateways.mail import RenderedEmail
from colmena.gateways.mailer import MAILER
from colmena.http.context import SETTINGS
from colmena.http.errors import ApiError
from colmena.http.middlewares import RATE_LIMITER, client_ip
from colmena.http.ratelimit import retry_after_header
from colmena.http.ratelimit_store import Take
from colmena.runtime.resources import Resources

log = structlog.get_logger(__name__)

DRAIN_TIMEOUT_S = 10.0


class PasswordWork:
    def __init__(self, cost: HashCost, concurrency: int) -> None:
        self.hasher = hasher(cost)
        self._slots = asyncio.Semaphore(concurrency)
        # What an unknown email is checked against: a hash of the same cost, of nothing anyone
        # knows.
        self._decoy = self.hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self.hasher.hash, password)

    async def matches(self, stored_hash: str | None, password: str) -> bool:
        """Whether `password` is the one `stored_hash` was made of; None (no such account)
        costs the same and is False."""
        async with self._slots:
            ok = await asyncio.to_thread(
                password_matches, self.hasher, stored_hash or self._decoy, password
            )
        return ok and stored_hash is not None

    def needs_rehash(self, stored_hash: str) -> bool:
        return self.hasher.check_needs_rehash(stored_hash)


class BackgroundMail:
    """Account emails, each sent in a task of its own after the answer left."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, to: str, email: RenderedEmail, *, kind: str) -> None:
        task = asyncio.create_task(self._send(to, email, kind))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, to: str, email: RenderedEmail, kind: str) -> None:
        try:
            message_id = await self.resources.shared(MAILER).send_email(to, email)
        except Exception as exc:  # logged; the reader asks again (see the module's docstring)
            log.warning("account email not sent", kind=kind, error=type(exc).__name__)
        else:
            log.info("account email sent", kind=kind, smtp_message_id=message_id)

    async def drain(self, timeout_s: float) -> None:
        """On shutdown: let the emails under way finish."""
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._tasks), timeout_s)


PASSWORDS = web.AppKey("account_passwords", PasswordWork)
ACCOUNT_MAIL = web.AppKey("account_mail", BackgroundMail)


def security_event(reason: str, **fields: object) -> None:
    """Counted and logged; callers pass ids and digests, never a password, token or address."""
    SECURITY_EVENTS.labels(reason=reason).inc()
    log.warning("security: account", reason=reason, **fields)


def _too_many(code: str, message: str, wait_s: float) -> ApiError:
    return ApiError(429, code, message, headers={"Retry-After": retry_after_header(wait_s)})


async def _take(request: web.Request, key: str, rule: RateRule | None, *, spend: bool) -> float:
    if rule is None:
        return 0.0
    verdict = await request.config_dict[RATE_LIMITER].store.apply([Take(key, rule, spend=spend)])
    return verdict.wait_s if verdict.refused_by is not None else 0.0


def _keys(request: web.Request, action: str, email: str | None, subject: str | None) -> list[str]:
    keys = [f"accounts:{action}:client:{client_ip(request)}"]
    if email is not None:
        keys.append(f"accounts:{action}:email:{email_key(email)}")
    if subject is not None:
        keys.append(f"accounts:{action}:account:{subject}")
    return keys


async def admit(
    request: web.Request, action: str, *, email: str | None = None, subject: str | None = None
) -> None:
    """Spend one `action` from the client's budget and from the email's (or the account's,
    `subject`); a 429 when either is empty. Budgets are spent one key at a time: each key is
    one Redis slot, as a Redis Cluster requires."""
    settings = _settings(request)
    rules = [settings.accounts_client_rule] + [settings.accounts_email_rule] * 2
    for key, rule in zip(_keys(request, action, email, subject), rules, strict=False):
        wait = await _take(request, key, rule, spend=True)
        if wait > 0:
            security_event("account_rate_limited", action=action, budget=key.split(":")[2])
            raise _too_many("rate_limited", "too many attempts; retry later", wait)


async def check_failures(request: web.Request, email: str) -> None:
    """429 while the client or the email has no failed logins left (nothing is spent)."""
    rule = _settings(request).accounts_failure_rule
    for key in _keys(request, "login_failed", email, None):
        wait = await _take(request, key, rule, spend=False)
        if wait > 0:
            security_event("account_login_locked", budget=key.split(":")[2])
            raise _too_many("too_many_failures", "too many failed logins; retry later", wait)


async def spend_failure(request: web.Request, email: str) -> None:
    rule = _settings(request).accounts_failure_rule
    for key in _keys(request, "login_failed", email, None):
        await _take(request, key, rule, spend=True)


def _settings(request: web.Request) -> Settings:
    return request.config_dict[SETTINGS]
