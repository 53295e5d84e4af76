"""The tenant's notifications (`/console/tenant/notifications`): where its bot's events go and
how each delivery went.

Read-only: the endpoints (a Telegram chat, a webhook URL; never the webhook's signing secret,
which only the API answers once) and the deliveries newest first, keyset-paginated on the
store's own cursor (the last delivery's id, which a cursor of another tenant cannot move). Both
read the session's tenant only. Registering endpoints and replaying a dead delivery stay with
the API (`/api/v1/notifications`), which answers the secret a webhook needs.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from colmena.http.console.core import (
    HtmlError,
    Page,
    decode_cursor,
    encode_cursor,
    page_cursor,
    render,
)
from colmena.http.console.tenant_common import URL, connection, route, session_tenant
from colmena.store import notifications as store

PAGE = f"{URL}/notifications"
PAGE_SIZE = 50


def _after(request: web.Request) -> uuid.UUID | None:
    cursor = page_cursor(request)
    if cursor is None:
        return None
    (value,) = decode_cursor(cursor, 1)
    if not isinstance(value, uuid.UUID):
        raise HtmlError(400, "That page link is not valid")
    return value


async def show(request: web.Request) -> web.Response:
    tenant_id = session_tenant(request)
    after = _after(request)
    async with connection(request) as conn:
        endpoints = await store.endpoints(conn, tenant_id)
        found = await store.list_deliveries(
            conn, tenant_id=tenant_id, after=after, limit=PAGE_SIZE + 1
        )
    shown = found[:PAGE_SIZE]
    more = len(found) > PAGE_SIZE
    deliveries = Page(shown, encode_cursor(shown[-1].id) if more else None)
    return render(
        request,
        "console/tenant/notifications.html",
        {"endpoints": endpoints, "deliveries": deliveries},
    )


def register(console: web.Application) -> None:
    console.router.add_get(route(PAGE), show, name="tenant-notifications")
