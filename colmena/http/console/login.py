"""Signing in to the console and out of it, the landing page and the language switch.

Operators sign in with an admin account (`colmena admins add`: name and argon2id password);
while no admin account is active the admin form takes COLMENA_BOT_ADMIN_TOKEN instead, so a
fresh install (and `colmena dev`) has a way in. Tenants sign in with their tenant API token or,
where self-service accounts exist, with the account's email and password.

A failure answers alike for an unknown name and a wrong secret, spends one attempt of the
client's failed-authentication budget (the one the API's wrong tokens spend: once empty, the
client is locked out of every limited route, the console included), and an account login also
spends the account's failed-login budget as the API's login does. Logins, failures and logouts
are audited (`console.login`, `console.login_failed`, `console.logout`) with the client's
address, never a secret. Each login opens a new session (no fixation); `next` is followed only
to a console path, so the login page cannot send anyone elsewhere.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import structlog
from aiohttp import web
from multidict import MultiDictProxy

from colmena.config.metrics import SECURITY_EVENTS
from colmena.domain.accounts import PolicyError, normalize_email
from colmena.domain.console_sessions import ADMIN_NAME
from colmena.domain.tenants import looks_like_token, token_digest
from colmena.http.account_services import PASSWORDS, admit, check_failures, spend_failure
from colmena.http.console.core import (
    LOGIN_PATH,
    PRE_SESSION_COOKIE,
    PREFIX,
    VIEWER,
    HtmlError,
    Viewer,
    delete_cookie,
    form,
    local_path,
    render,
    see_other,
    set_cookie,
    translate,
)
from colmena.http.console.i18n import LANG_COOKIE, LANGUAGES
from colmena.http.console.sessions import (
    ADMIN_PREFIX,
    LOGOUT_PATH,
    TENANT_PREFIX,
    TOKEN_ADMIN,
    close_session,
    open_session,
)
from colmena.http.context import RESOURCES, SETTINGS
from colmena.http.middlewares import client_ip, record_failed_auth
from colmena.store import accounts as accounts_store
from colmena.store import admins as admins_store
from colmena.store import audit
from colmena.store import console_sessions as sessions_store
from colmena.store import tenants as tenants_store

log = structlog.get_logger(__name__)

LANGUAGE_PATH = PREFIX + "/language"
ADMIN_HOME = ADMIN_PREFIX + "/"
TENANT_HOME = TENANT_PREFIX + "/"
LANG_MAX_AGE = 365 * 24 * 3600
ANONYMOUS = "anonymous"
FAILED = "Sign-in failed: the name, password or token is not right."


@dataclass(frozen=True)
class SignedIn:
    kind: Literal["admin", "tenant"]
    method: str
    name: str  # the admin's name or the tenant's id
    admin_name: str | None = None
    tenant_id: str | None = None
    account_id: uuid.UUID | None = None
    credential_sha256: bytes | None = None

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Refused:
    subject_kind: str
    subject_id: str  # a known admin's name or account's id, else "unknown": never what was typed


Outcome = SignedIn | Refused


def safe_next(value: str | None, kind: str) -> str:
    """Where to go after login: `next` when it is a console page, else the kind's home."""
    home = ADMIN_HOME if kind == "admin" else TENANT_HOME
    if not value or not local_path(value) or value.startswith(LOGIN_PATH):
        return home
    return value


def home_of(viewer: Viewer | None) -> str:
    if viewer is None:
        return LOGIN_PATH
    return ADMIN_HOME if viewer.kind == "admin" else TENANT_HOME


async def landing(request: web.Request) -> web.Response:
    return web.Response(status=303, headers={"Location": home_of(request.get(VIEWER))})


# Checking credentials -------------------------------------------------------------------------


def _bounded(request: web.Request, password: str) -> bool:
    return 0 < len(password) <= request.config_dict[SETTINGS].accounts_password_max_length


async def _admin(request: web.Request, data: MultiDictProxy[str]) -> Outcome:
    passwords = request.config_dict[PASSWORDS]
    async with request.config_dict[RESOURCES].pool.acquire() as conn:
        has_admins = await admins_store.any_active(conn)
        name = data.get("username", "").strip().lower()
        admin = await admins_store.get_admin(conn, name) if ADMIN_NAME.fullmatch(name) else None
    if has_admins:
        password = data.get("password", "")
        usable = admin if admin is not None and admin.disabled_at is None else None
        # No connection is held while argon2 works; an unknown name costs a hash all the same.
        matches = _bounded(request, password) and await passwords.matches(
            usable.password_hash if usable else None, password
        )
        if usable is None or not matches:
            return Refused("admin", admin.name if admin else "unknown")
        if passwords.needs_rehash(usable.password_hash):
            rehashed = await passwords.hash(password)
            async with request.config_dict[RESOURCES].pool.acquire() as conn:
                await admins_store.set_password(conn, usable.name, rehashed)
        return SignedIn("admin", "password", usable.name, admin_name=usable.name)
    configured = request.config_dict[SETTINGS].bot_admin_token
    given = token_digest(data.get("admin_token", ""))
    if configured is None or not hmac.compare_digest(
        given, token_digest(configured.get_secret_value())
    ):
        return Refused("admin", TOKEN_ADMIN)
    return SignedIn("admin", "admin_token", TOKEN_ADMIN)


async def _tenant(request: web.Request, data: MultiDictProxy[str]) -> Outcome:
    token = data.get("token", "").strip()
    digest = token_digest(token)
    found = None
    if looks_like_token(token):
        async with request.config_dict[RESOURCES].pool.acquire() as conn:
            found = await tenants_store.tenant_by_token(conn, digest)
    if found is None or not hmac.compare_digest(found[1], digest):
        return Refused("tenant", "unknown")
    tenant = found[0]
    return SignedIn(
        "tenant", "tenant_token", tenant.id, tenant_id=tenant.id, credential_sha256=digest
    )


async def _account(request: web.Request, data: MultiDictProxy[str]) -> Outcome:
    try:
        email = normalize_email(data.get("email", ""))
    except PolicyError:
        return Refused("account", "unknown")
    password = data.get("password", "")
    await admit(request, "login", email=email)
    await check_failures(request, email)
    async with request.config_dict[RESOURCES].pool.acquire() as conn:
        account = await accounts_store.account_by_email(conn, email)
    passwords = request.config_dict[PASSWORDS]
    matches = _bounded(request, password) and await passwords.matches(
        account.password_hash if account else None, password
    )
    if account is None or not matches or account.tenant_id is None:
        await spend_failure(request, email)
        return Refused("account", str(account.id) if account else "unknown")
    return SignedIn(
        "tenant", "account", account.tenant_id, tenant_id=account.tenant_id, account_id=account.id
    )


CHECKS: dict[str, Callable[[web.Request, MultiDictProxy[str]], Awaitable[Outcome]]] = {
    "admin": _admin,
    "tenant": _tenant,
    "account": _account,
}


# Pages ----------------------------------------------------------------------------------------


async def _login_context(request: web.Request) -> dict[str, Any]:
    async with request.config_dict[RESOURCES].pool.acquire() as conn:
        has_admins = await admins_store.any_active(conn)
        has_accounts = await sessions_store.accounts_can_sign_in(conn)
    return {
        "admin_accounts": has_admins,
        "admin_token_configured": request.config_dict[SETTINGS].bot_admin_token is not None,
        "tenant_accounts": has_accounts,
    }


async def _login_page(
    request: web.Request,
    nxt: str | None,
    *,
    error: str | None = None,
    failed: str | None = None,
    status: int = 200,
) -> web.Response:
    context = await _login_context(request)
    context.update(
        {
            "next": nxt if nxt and local_path(nxt) else "",
            "error": translate(request, error) if error else None,
            "failed": failed,
        }
    )
    return render(request, "console/login.html", context, status=status)


async def show_login(request: web.Request) -> web.Response:
    return await _login_page(request, request.query.get("next"))


async def _audit(conn: asyncpg.Connection, request: web.Request, **fields: Any) -> None:
    after = {**fields.pop("after", {}), "client": client_ip(request)}
    await audit.record_action(conn, after=after, cause="console", **fields)


async def login(request: web.Request) -> web.Response:
    data = await form(request)
    kind = data.get("kind", "")
    check = CHECKS.get(kind)
    if check is None:
        raise HtmlError(400, "Choose how to sign in.")
    outcome = await check(request, data)
    pool = request.config_dict[RESOURCES].pool
    if isinstance(outcome, Refused):
        await record_failed_auth(request)
        SECURITY_EVENTS.labels(reason="console_login_failed").inc()
        log.warning("security: console sign-in refused", method=kind, subject=outcome.subject_id)
        async with pool.acquire() as conn:
            await _audit(
                conn,
                request,
                actor=ANONYMOUS,
                action="console.login_failed",
                subject_kind=outcome.subject_kind,
                subject_id=outcome.subject_id,
                after={"method": kind},
            )
        return await _login_page(request, data.get("next"), error=FAILED, failed=kind, status=401)
    response = see_other(request, safe_next(data.get("next"), outcome.kind))
    async with pool.acquire() as conn, conn.transaction():
        await open_session(
            request,
            response,
            conn,
            kind=outcome.kind,
            admin_name=outcome.admin_name,
            tenant_id=outcome.tenant_id,
            account_id=outcome.account_id,
            credential_sha256=outcome.credential_sha256,
        )
        await _audit(
            conn,
            request,
            actor=outcome.actor,
            action="console.login",
            subject_kind=outcome.kind,
            subject_id=outcome.name,
            after={"method": outcome.method},
        )
    delete_cookie(response, PRE_SESSION_COOKIE)
    log.info("console sign-in", kind=outcome.kind, method=outcome.method, subject=outcome.name)
    return response


async def logout(request: web.Request) -> web.Response:
    viewer = request[VIEWER]
    response = see_other(request, LOGIN_PATH, notice="You are signed out.")
    async with request.config_dict[RESOURCES].pool.acquire() as conn, conn.transaction():
        await close_session(request, response, conn)
        await _audit(
            conn,
            request,
            actor=viewer.audit_actor,
            action="console.logout",
            subject_kind=viewer.kind,
            subject_id=viewer.name,
        )
    log.info("console sign-out", kind=viewer.kind, subject=viewer.name)
    return response


async def set_language(request: web.Request) -> web.Response:
    """The language switch of every page: a small form, so it is CSRF-checked like any other."""
    data = await form(request)
    chosen = data.get("lang", "")
    if chosen not in LANGUAGES:
        raise HtmlError(400, "Unknown language.")
    target = data.get("next", "")
    response = see_other(request, target if local_path(target) else home_of(request.get(VIEWER)))
    set_cookie(request, response, LANG_COOKIE, chosen, max_age=LANG_MAX_AGE)
    return response


def add_routes(console: web.Application) -> None:
    console.router.add_get("/", landing)
    console.router.add_get("/login", show_login)
    console.router.add_post("/login", login)
    console.router.add_post("/logout", logout)
    console.router.add_post("/language", set_language)


__all__ = ["LOGOUT_PATH", "add_routes", "safe_next"]
