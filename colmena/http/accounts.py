"""Self-service accounts: sign up, log in, refresh, log out, ask for a password reset.

No answer says whether an email has an account. Sign-up is always the same 202 (a new address
gets a verification link, an unverified one a fresh link and the new password, a verified one
an email saying someone tried), and every path hashes the password, so they cost alike.
Login answers one 401 for an unknown email, a wrong password and an unverified address: a
distinct 403 for "not verified" would let anyone who signs up with someone's address learn
whether it already had an account (their own password works only on the account they just
made). The 401 says all three possibilities; a reader who never verified signs up again for a
fresh link. A forgotten password is the same 202 whether or not the address has an account.

Login gives an access token (COLMENA_ACCOUNTS_ACCESS_TTL_S) for the tenant API and a refresh
token; each refresh spends the refresh token and gives a new pair, and a refresh token used
twice revokes its whole session (a copy is loose). Logout revokes the session of the refresh
token it is given. The links the emails carry are served by `account_links`.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from aiohttp import web

from colmena.config import Settings
from colmena.domain.accounts import (
    ACCESS_PREFIX,
    LINK_PREFIX,
    REFRESH_PREFIX,
    HashCost,
    LinkPurpose,
    PolicyError,
    check_password,
    looks_like,
    new_token,
    normalize_email,
    refresh_outcome,
)
from colmena.domain.tenants import token_digest
from colmena.gateways.account_email import account_email
from colmena.http.account_services import (
    ACCOUNT_MAIL,
    DRAIN_TIMEOUT_S,
    PASSWORDS,
    BackgroundMail,
    PasswordWork,
    admit,
    check_failures,
    security_event,
    spend_failure,
)
from colmena.http.context import RESOURCES, SETTINGS
from colmena.http.errors import ApiError
from colmena.http.middlewares import record_failed_auth
from colmena.http.payloads import field_errors, json_body
from colmena.http.tenant_limits import tenant_connection
from colmena.store import accounts as store

log = structlog.get_logger(__name__)

PREFIX = "/api/v1"
VERIFY_PATH = PREFIX + "/verify/{token}"
RESET_PATH = PREFIX + "/password/reset/{token}"
ACCEPTED = {
    "status": "accepted",
    "message": "if this address can be used, an email is on its way to it: follow its link",
}
_INVALID_LOGIN = (
    "the email or the password is not right, or the email is not verified yet (sign up again "
    "for a new verification link)"
)
_INVALID_REFRESH = "the refresh token is not valid (expired, used or revoked): log in again"


async def object_body(request: web.Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise field_errors([("body", "expected a JSON object")], "the body is not valid")
    return body


def policy_error(exc: PolicyError) -> ApiError:
    return field_errors([(exc.field, str(exc))], "the body is not valid")


def _email_of(body: dict[str, Any]) -> str:
    try:
        return normalize_email(body.get("email"))
    except PolicyError as exc:
        raise policy_error(exc) from None


def send_link(
    request: web.Request,
    account: store.Account,
    purpose: LinkPurpose,
    token: str,
    ttl_minutes: float,
) -> None:
    """Email `account` the link for `token` once the answer is away."""
    settings = request.config_dict[SETTINGS]
    path = VERIFY_PATH if purpose == "verify" else RESET_PATH
    email = account_email(
        purpose,
        locale=request.headers.get("Accept-Language"),
        link=settings.license_links_base + path.format(token=token),
        ttl_minutes=ttl_minutes,
    )
    request.config_dict[ACCOUNT_MAIL].send(account.email, email, kind=purpose)


async def new_link(
    conn: asyncpg.Connection, account: store.Account, purpose: LinkPurpose, ttl_s: float
) -> str:
    """A fresh link token of the account's (the earlier unused one stops working)."""
    token = new_token(LINK_PREFIX)
    await store.replace_link(conn, account.id, purpose, token_digest(token), ttl_s=ttl_s)
    return token


async def _sign_up(
    conn: asyncpg.Connection, email: str, password_hash: str
) -> tuple[store.Account, str]:
    """The account for `email` and what the sign-up found: `created`, `unverified` (its
    password is replaced: the newest sign-up's password and link count, the earlier link stops
    working, so whoever verifies does so for the password just given) or `verified` (left as
    it is)."""
    created = await store.create_account(conn, email, password_hash)
    if created is not None:
        return created, "created"
    # The insert met this address's account (it waited for a concurrent one to commit).
    account = await store.account_by_email(conn, email, for_update=True)
    if account is None:
        raise ApiError(503, "busy", "the server is busy; retry shortly")
    if account.verified_at is not None:
        return account, "verified"
    await store.set_password(conn, account.id, password_hash)
    return account, "unverified"


async def signup(request: web.Request) -> web.Response:
    body = await object_body(request)
    settings = request.config_dict[SETTINGS]
    email = _email_of(body)
    try:
        password = check_password(
            body.get("password"),
            email=email,
            min_length=settings.accounts_password_min_length,
            max_length=settings.accounts_password_max_length,
        )
    except PolicyError as exc:
        raise policy_error(exc) from None
    await admit(request, "signup", email=email)
    password_hash = await request.config_dict[PASSWORDS].hash(password)
    ttl_s = settings.accounts_verify_ttl_hours * 3600
    async with tenant_connection(request) as conn, conn.transaction():
        account, outcome = await _sign_up(conn, email, password_hash)
        token = await new_link(conn, account, "verify", ttl_s) if outcome != "verified" else None
    if token is not None:
        send_link(request, account, "verify", token, ttl_s / 60)
    else:
        notice = account_email("already_registered", locale=request.headers.get("Accept-Language"))
        request.config_dict[ACCOUNT_MAIL].send(account.email, notice, kind="already_registered")
    log.info("account sign-up", account_id=str(account.id), outcome=outcome)
    return web.json_response(ACCEPTED, status=202)


async def issue_tokens(
    conn: asyncpg.Connection, session_id: Any, settings: Settings
) -> dict[str, Any]:
    access, refresh = new_token(ACCESS_PREFIX), new_token(REFRESH_PREFIX)
    await store.add_token(
        conn, session_id, "access", token_digest(access), ttl_s=settings.accounts_access_ttl_s
    )
    await store.add_token(
        conn,
        session_id,
        "refresh",
        token_digest(refresh),
        ttl_s=settings.accounts_refresh_ttl_hours * 3600,
    )
    return {
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": settings.accounts_access_ttl_s,
    }


def _bounded_password(body: dict[str, Any], settings: Settings) -> str:
    password = body.get("password")
    if not isinstance(password, str) or not password:
        raise field_errors([("password", "password must be a string")], "the body is not valid")
    if len(password) > settings.accounts_password_max_length:
        message = f"password must have at most {settings.accounts_password_max_length} characters"
        raise field_errors([("password", message)], "the body is not valid")
    return password


async def login(request: web.Request) -> web.Response:
    body = await object_body(request)
    settings = request.config_dict[SETTINGS]
    email = _email_of(body)
    password = _bounded_password(body, settings)
    await admit(request, "login", email=email)
    await check_failures(request, email)
    passwords: PasswordWork = request.config_dict[PASSWORDS]
    async with tenant_connection(request) as conn:
        account = await store.account_by_email(conn, email)
    # No connection is held while argon2 works.
    matches = await passwords.matches(account.password_hash if account else None, password)
    if account is None or not matches or account.tenant_id is None:
        await spend_failure(request, email)
        await record_failed_auth(request)
        security_event("account_login_failed", account_id=str(account.id) if account else None)
        raise ApiError(401, "invalid_credentials", _INVALID_LOGIN)
    # A cost raised since this hash was made: the password is at hand, so hash it anew.
    rehashed = (
        await passwords.hash(password) if passwords.needs_rehash(account.password_hash) else None
    )
    async with tenant_connection(request) as conn, conn.transaction():
        if rehashed is not None:
            await store.set_password(conn, account.id, rehashed)
        session_id = await store.open_session(conn, account.id)
        tokens = await issue_tokens(conn, session_id, settings)
    log.info("account login", account_id=str(account.id), tenant_id=account.tenant_id)
    return web.json_response(tokens)


async def refresh(request: web.Request) -> web.Response:
    body = await object_body(request)
    token = body.get("refresh_token")
    if not isinstance(token, str):
        raise field_errors([("refresh_token", "a string is required")], "the body is not valid")
    await admit(request, "refresh")
    if not looks_like(REFRESH_PREFIX, token):
        await record_failed_auth(request)
        raise ApiError(401, "invalid_token", _INVALID_REFRESH)
    settings = request.config_dict[SETTINGS]
    digest = token_digest(token)
    async with tenant_connection(request) as conn:
        async with conn.transaction():
            found = await store.token_for_update(conn, digest)
            outcome = refresh_outcome(found.token, found.now) if found else "refused"
            tokens = None
            if found is not None and outcome == "reused":
                await store.revoke_session(conn, found.session_id, "refresh_reused")
            elif found is not None and outcome == "rotate":
                await admit(request, "refresh", subject=str(found.account_id))
                await store.use_token(conn, digest)
                tokens = await issue_tokens(conn, found.session_id, settings)
    if tokens is None:
        await record_failed_auth(request)
        reason = "account_refresh_reused" if outcome == "reused" else "account_refresh_refused"
        security_event(reason, session_id=str(found.session_id) if found else None)
        raise ApiError(401, "invalid_token", _INVALID_REFRESH)
    return web.json_response(tokens)


async def logout(request: web.Request) -> web.Response:
    """204 for any string: a logout tells nobody whether a token was live."""
    body = await object_body(request)
    token = body.get("refresh_token")
    if not isinstance(token, str):
        raise field_errors([("refresh_token", "a string is required")], "the body is not valid")
    await admit(request, "logout")
    if looks_like(REFRESH_PREFIX, token):
        async with tenant_connection(request) as conn, conn.transaction():
            found = await store.token_for_update(conn, token_digest(token))
            if found is not None and await store.revoke_session(conn, found.session_id, "logout"):
                log.info("account logout", session_id=str(found.session_id))
    return web.Response(status=204)


async def forgot_password(request: web.Request) -> web.Response:
    body = await object_body(request)
    email = _email_of(body)
    await admit(request, "forgot", email=email)
    ttl_s = request.config_dict[SETTINGS].accounts_reset_ttl_minutes * 60
    async with tenant_connection(request) as conn, conn.transaction():
        account = await store.account_by_email(conn, email, for_update=True)
        token = await new_link(conn, account, "reset", ttl_s) if account else None
    if account is not None and token is not None:
        send_link(request, account, "reset", token, ttl_s / 60)
        log.info("account password reset asked", account_id=str(account.id))
    return web.json_response(ACCEPTED, status=202)


async def _drain_mail(app: web.Application) -> None:
    await app[ACCOUNT_MAIL].drain(DRAIN_TIMEOUT_S)


def setup(app: web.Application) -> None:
    settings = app[SETTINGS]
    cost = HashCost(
        settings.accounts_argon2_time_cost,
        settings.accounts_argon2_memory_kib,
        settings.accounts_argon2_parallelism,
    )
    app[PASSWORDS] = PasswordWork(cost, settings.accounts_hash_concurrency)
    app[ACCOUNT_MAIL] = BackgroundMail(app[RESOURCES])
    app.on_shutdown.append(_drain_mail)
    app.router.add_post(PREFIX + "/signup", signup)
    app.router.add_post(PREFIX + "/login", login)
    app.router.add_post(PREFIX + "/token/refresh", refresh)
    app.router.add_post(PREFIX + "/logout", logout)
    app.router.add_post(PREFIX + "/password/forgot", forgot_password)
