"""What every tenant page shares: whose pages these are, a bounded connection, refusals in words.

The tenant comes only from the session (`request[VIEWER]`), never from a URL or a form field,
so no page can be pointed at another tenant. Connections are the tenant API's
(`tenant_connection`: a 503 once the pool stayed busy), and the API's refusals (a bound reached,
a config over the plan, the tenant gone) become console pages in the viewer's language.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import asyncpg
from aiohttp import web

from colmena.http.console.core import PREFIX, VIEWER, HtmlError, translate
from colmena.http.errors import ApiError
from colmena.http.tenant_limits import tenant_connection

URL = PREFIX + "/tenant"


def route(url: str) -> str:
    """A page's route in the console sub-app (mounted at /console) from its URL."""
    return url.removeprefix(PREFIX)


# The API's refusal codes a tenant page can meet, said for people (English source strings).
_REFUSALS = {
    "too_many_commands": "Too many commands are not done yet; try again when one is.",
    "config_over_plan": "The config's capital is over your plan's limit: change the config first.",
    "busy": "The server is busy; try again shortly.",
    "too_many_key_writes": "Another key change is in progress; try again shortly.",
    "too_many_log_reads": "Too many log reads at once; try again shortly.",
    "too_many_streams": "Too many live logs are open; close one and try again.",
    "unauthorized": "Your tenant no longer exists.",
    "not_configured": "Provider keys cannot be stored right now.",
}


def session_tenant(request: web.Request) -> str:
    """The session's tenant id (the session middleware lets only tenants reach these pages)."""
    tenant_id = request[VIEWER].tenant_id
    if tenant_id is None:
        raise HtmlError(403, translate(request, "This page is for tenants."))
    return tenant_id


def refusal_message(exc: ApiError) -> str:
    """The API's refusal `exc` as an English source string (the API's own words if unknown)."""
    return _REFUSALS.get(exc.code, exc.error_message)


def refusal(request: web.Request, exc: ApiError) -> str:
    """The API's refusal `exc` in the viewer's language."""
    return translate(request, refusal_message(exc))


@asynccontextmanager
async def connection(request: web.Request) -> AsyncIterator[asyncpg.Connection]:
    """A tenant page's pooled connection for reads; a busy pool is a 503 page. (Actions use
    `tenant_connection` itself, to show the API's refusals on their own page.)"""
    try:
        async with tenant_connection(request) as conn:
            yield conn
    except ApiError as exc:
        raise HtmlError(exc.status_code, refusal_message(exc), headers=exc.headers) from None


def plain(amount: Decimal) -> str:
    """An amount as people write it: 1000.5, never 1.0005E+3."""
    return format(amount.normalize(), "f")
