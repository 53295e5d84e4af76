"""The links account emails carry: verify an address, reset a password.

Verifying activates the account and creates its tenant on the Free plan, with a generated id
and an operator token nobody is shown (`colmena tenants token rotate` gives the operator one);
the account reaches the tenant API with its access tokens. It is idempotent: the link opened
again (a mail scanner opened it first, the reader clicks) says the address is verified. `GET`
serves people (a small page), `POST` with `{"token"}` serves programs.

A reset link is used once. `GET` shows a form (it spends nothing, so a mail scanner cannot
spend it); the form, or a program, posts the token and the new password, which replaces the
old one and revokes every session of the account. Proving the mailbox verifies the address
too, if it was not yet.
"""

from __future__ import annotations

import html
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from colmena.domain.accounts import LINK_PREFIX, PolicyError, check_password, looks_like
from colmena.domain.tenants import (
    DEFAULT_CONFIG,
    FREE_PLAN,
    PlanLimits,
    fit_to_plan,
    new_tenant_id,
    token_digest,
)
from colmena.domain.tenants import new_token as new_operator_token
from colmena.http.account_services import PASSWORDS, admit, security_event
from colmena.http.accounts import PREFIX, RESET_PATH, VERIFY_PATH, object_body, policy_error
from colmena.http.context import SETTINGS
from colmena.http.errors import ApiError
from colmena.http.middlewares import record_failed_auth
from colmena.http.payloads import field_errors
from colmena.http.tenant_limits import tenant_connection
from colmena.store import accounts as store
from colmena.store import tenants as tenants_store

log = structlog.get_logger(__name__)

RESET_FORM_PATH = PREFIX + "/password/reset"
TENANT_ID_TRIES = 5
_INVALID_LINK = "the link is not valid, or it expired or was used: ask for a new one"


def _page(status: int, title: str, paragraph: str, form: str = "") -> web.Response:
    document = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="robots" content="noindex"><title>{html.escape(title)}</title></head>\n'
        '<body style="font-family: sans-serif; max-width: 36em; margin: 3em auto;">\n'
        f"<h1>{html.escape(title)}</h1>\n<p>{html.escape(paragraph)}</p>\n{form}</body></html>\n"
    )
    return web.Response(status=status, text=document, content_type="text/html")


async def activate(conn: asyncpg.Connection, account: store.Account) -> str:
    """Mark the account verified and give it a tenant on the Free plan; the tenant's id."""
    plan = await tenants_store.get_plan(conn, FREE_PLAN)
    if plan is None:
        raise ApiError(503, "not_configured", f"the {FREE_PLAN} plan is missing")
    config = fit_to_plan(DEFAULT_CONFIG, PlanLimits(plan.max_symbols, plan.live_allowed))
    for _ in range(TENANT_ID_TRIES):
        tenant = await tenants_store.create_tenant(
            conn,
            tenant_id=new_tenant_id(),
            email=account.email,
            plan=FREE_PLAN,
            token_sha256=token_digest(new_operator_token()),
            config=config,
            plan_source="signup",
        )
        if tenant is not None:
            await store.mark_verified(conn, account.id, tenant.id)
            log.info("account verified", account_id=str(account.id), tenant_id=tenant.id)
            return tenant.id
    raise ApiError(503, "busy", "could not allot a tenant id; retry shortly")


async def _verify(request: web.Request, token: str) -> str | None:
    """`verified`, `already_verified`, or None for a link that is not valid."""
    await admit(request, "verify")
    if not looks_like(LINK_PREFIX, token):
        return None
    digest = token_digest(token)
    async with tenant_connection(request) as conn, conn.transaction():
        link = await store.link_for_update(conn, digest, "verify")
        if link is None:
            return None
        if link.account.verified_at is not None:
            return "already_verified"
        if link.used_at is not None or link.expires_at <= link.now:
            return None
        await activate(conn, link.account)
        await store.use_link(conn, digest)
    return "verified"


async def _refuse_link(request: web.Request, purpose: str) -> None:
    await record_failed_auth(request)
    security_event("account_link_invalid", purpose=purpose)


async def verify_page(request: web.Request) -> web.Response:
    outcome = await _verify(request, request.match_info["token"])
    if outcome is None:
        await _refuse_link(request, "verify")
        return _page(404, "Link not valid", _INVALID_LINK)
    return _page(200, "Email verified", "Your account is active: log in to use it.")


async def verify_api(request: web.Request) -> web.Response:
    body = await object_body(request)
    token = body.get("token")
    if not isinstance(token, str):
        raise field_errors([("token", "a string is required")], "the body is not valid")
    outcome = await _verify(request, token)
    if outcome is None:
        await _refuse_link(request, "verify")
        raise ApiError(404, "invalid_link", _INVALID_LINK)
    return web.json_response({"status": outcome})


async def reset_form(request: web.Request) -> web.Response:
    """The form only; the link is checked (and spent) when the form is sent."""
    token = request.match_info["token"]
    if not looks_like(LINK_PREFIX, token):
        await _refuse_link(request, "reset")
        return _page(404, "Link not valid", _INVALID_LINK)
    settings = request.config_dict[SETTINGS]
    form = (
        f'<form method="post" action="{RESET_FORM_PATH}">'
        f'<input type="hidden" name="token" value="{html.escape(token)}">'
        '<label>New password <input type="password" name="password" required '
        f'minlength="{settings.accounts_password_min_length}" '
        f'maxlength="{settings.accounts_password_max_length}" autocomplete="new-password">'
        '</label> <button type="submit">Set password</button></form>\n'
    )
    return _page(200, "Choose a new password", "It ends every open session.", form)


async def _reset_fields(request: web.Request) -> tuple[dict[str, Any], bool]:
    """The body's fields and whether they came from the HTML form."""
    if request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        return {name: form.get(name) for name in ("token", "password")}, True
    return await object_body(request), False


async def _reset(request: web.Request, token: object, password: object) -> int | None:
    """How many sessions the new password ended; None for a link that is not valid."""
    await admit(request, "reset")
    if not isinstance(token, str):
        raise field_errors([("token", "a string is required")], "the body is not valid")
    if not looks_like(LINK_PREFIX, token):
        return None
    settings = request.config_dict[SETTINGS]
    digest = token_digest(token)
    async with tenant_connection(request) as conn, conn.transaction():
        link = await store.link_for_update(conn, digest, "reset")
        if link is None or link.used_at is not None or link.expires_at <= link.now:
            return None
        await admit(request, "reset", subject=str(link.account.id))
        try:
            chosen = check_password(
                password,
                email=link.account.email,
                min_length=settings.accounts_password_min_length,
                max_length=settings.accounts_password_max_length,
            )
        except PolicyError as exc:
            raise policy_error(exc) from None
        await store.set_password(
            conn, link.account.id, await request.config_dict[PASSWORDS].hash(chosen)
        )
        await store.use_link(conn, digest)
        ended = await store.revoke_sessions(conn, link.account.id, "password_reset")
        if link.account.verified_at is None:
            await activate(conn, link.account)
    log.info("account password reset", account_id=str(link.account.id), sessions_ended=ended)
    return ended


async def reset_password(request: web.Request) -> web.Response:
    fields, from_form = await _reset_fields(request)
    try:
        ended = await _reset(request, fields.get("token"), fields.get("password"))
    except ApiError as exc:
        if not from_form or exc.status_code != 422:
            raise
        return _page(422, "Password not accepted", exc.extra["fields"][0]["message"])
    if ended is None:
        await _refuse_link(request, "reset")
        if from_form:
            return _page(404, "Link not valid", _INVALID_LINK)
        raise ApiError(404, "invalid_link", _INVALID_LINK)
    if from_form:
        return _page(200, "Password changed", "Log in with the new password.")
    return web.json_response({"status": "password_changed", "sessions_revoked": ended})


def setup(app: web.Application) -> None:
    app.router.add_get(VERIFY_PATH, verify_page)
    app.router.add_post(PREFIX + "/verify", verify_api)
    app.router.add_get(RESET_PATH, reset_form)
    app.router.add_post(RESET_FORM_PATH, reset_password)
