"""The console's session middleware: who is signed in, and who may see which pages.

The `colmena_console` cookie holds a random secret; the session row is found by its SHA-256.
A session past its idle or absolute timeout, or whose credential no longer holds (admin
disabled, tenant token rotated, account gone), is deleted and its cookie cleared. Pages under
/console/admin/ need an admin session, pages under /console/tenant/ (and logout) a tenant or
any session as the path says; without one the answer is a 303 to the login page, which comes
back to the page asked for after login. A visit is written at most once a minute
(`domain.console_sessions.needs_touch`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from urllib.parse import urlencode

import asyncpg
import structlog
from aiohttp import web

from colmena.domain.console_sessions import (
    needs_touch,
    new_secret,
    opened_at,
    session_digest,
    session_state,
)
from colmena.http.console.core import (
    CLOCK,
    LOGIN_PATH,
    PREFIX,
    SESSION_COOKIE,
    VIEWER,
    Viewer,
    delete_cookie,
    set_cookie,
)
from colmena.http.console.i18n import request_language
from colmena.http.console.static import URL_PREFIX
from colmena.http.context import RESOURCES, SETTINGS
from colmena.store import console_sessions as store

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ADMIN_PREFIX = PREFIX + "/admin"
TENANT_PREFIX = PREFIX + "/tenant"
LOGOUT_PATH = PREFIX + "/logout"
TOKEN_ADMIN = "token"  # the name of an admin signed in with COLMENA_BOT_ADMIN_TOKEN


def _needs(path: str) -> str | None:
    """The session kind a path needs: "admin", "tenant", "any" or None (public)."""
    for prefix, kind in ((ADMIN_PREFIX, "admin"), (TENANT_PREFIX, "tenant")):
        if path == prefix or path.startswith(prefix + "/"):
            return kind
    return "any" if path == LOGOUT_PATH else None


def login_redirect(request: web.Request) -> web.Response:
    """303 to the login page, coming back here (a GET's query included) after login."""
    target = request.path_qs if request.method == "GET" else request.path
    return web.Response(
        status=303, headers={"Location": f"{LOGIN_PATH}?{urlencode({'next': target})}"}
    )


async def _load(request: web.Request, secret: str) -> Viewer | None:
    digest = session_digest(secret)
    now = request.config_dict[CLOCK].now()
    idle_s = request.config_dict[SETTINGS].console_idle_s
    async with request.config_dict[RESOURCES].pool.acquire() as conn:
        found = await store.find_session(conn, digest)
        if found is None:
            return None
        state = session_state(found.times, now, idle_s=idle_s)
        if state != "live" or not found.still_valid:
            await store.end_session(conn, digest)
            log.info(
                "console session ended",
                reason=state if state != "live" else "credential_gone",
                session_id=digest.hex()[:16],
            )
            return None
        if needs_touch(found.times, now):
            await store.touch(conn, digest, now)
    name = (found.admin_name or TOKEN_ADMIN) if found.kind == "admin" else found.tenant_id
    return Viewer(
        kind=found.kind,
        name=name or "",
        tenant_id=found.tenant_id,
        session_id=digest.hex(),
        csrf_token=found.csrf_token,
        language=request_language(request),
    )


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(URL_PREFIX):
        return await handler(request)
    secret = request.cookies.get(SESSION_COOKIE)
    viewer = await _load(request, secret) if secret else None
    needed = _needs(request.path)
    if needed is not None and (viewer is None or needed not in ("any", viewer.kind)):
        response: web.StreamResponse = login_redirect(request)
    else:
        if viewer is not None:
            request[VIEWER] = viewer
        context = {"tenant_id": viewer.tenant_id} if viewer and viewer.tenant_id else {}
        with structlog.contextvars.bound_contextvars(**context):
            response = await handler(request)
    if secret and viewer is None and not response.prepared:
        delete_cookie(response, SESSION_COOKIE)
    return response


async def open_session(
    request: web.Request,
    response: web.StreamResponse,
    conn: asyncpg.Connection,
    *,
    kind: store.Kind,
    admin_name: str | None = None,
    tenant_id: str | None = None,
    account_id: uuid.UUID | None = None,
    credential_sha256: bytes | None = None,
) -> None:
    """A new session (a new secret at every login: no session fixation), the one the browser
    came with ended, its cookie set on `response`; stale sessions are cleared on the way. Call
    inside the login's transaction."""
    settings = request.config_dict[SETTINGS]
    now = request.config_dict[CLOCK].now()
    secret = new_secret()
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:
        await store.end_session(conn, session_digest(previous))
    await store.delete_stale(
        conn, now=now, seen_before=now - timedelta(seconds=settings.console_idle_s)
    )
    await store.open_session(
        conn,
        session_digest(secret),
        kind=kind,
        csrf_token=new_secret(),
        times=opened_at(now, settings.console_absolute_s),
        admin_name=admin_name,
        tenant_id=tenant_id,
        account_id=account_id,
        credential_sha256=credential_sha256,
    )
    # A session cookie (no Max-Age): closing the browser ends it too; the server's timeouts
    # end it regardless.
    set_cookie(request, response, SESSION_COOKIE, secret)


async def close_session(
    request: web.Request, response: web.StreamResponse, conn: asyncpg.Connection
) -> bool:
    """End the browser's session (logout) and clear its cookie."""
    secret = request.cookies.get(SESSION_COOKIE)
    delete_cookie(response, SESSION_COOKIE)
    return bool(secret) and await store.end_session(conn, session_digest(secret or ""))
