"""The tenant API and the admin routes, mounted on the ingress as sub-apps, one auth each.

The tenant API answers under four prefixes (`/api/v1/bot`, `/api/v1/commands`, `/api/v1/keys`,
`/api/v1/notifications`), each a sub-app carrying the tenant auth middleware; a sub-app at
`/api/v1` itself would also catch the rates routes' wrong methods and turn their 405 into a 404.
The admin routes are one sub-app at `/api/v1/admin` with the admin token's middleware. The
`colmena_bots` gauge is read from the bots table at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from colmena.config.metrics import BOTS
from colmena.http import admin, bot_logs, tenant_api, tenant_keys, tenant_notifications
from colmena.http.context import RESOURCES
from colmena.http.health import GAUGE_REFRESHERS
from colmena.http.tenant_auth import tenant_auth_middleware
from colmena.http.tenant_limits import REQUESTS, TenantSlots
from colmena.store import tenants as store

PREFIX = "/api/v1"
BOT_STATES = ("running", "unhealthy", "backoff", "crashloop", "stopped", "unknown")


def tenant_app(*setups: Callable[[web.Application], None]) -> web.Application:
    """A sub-app of the tenant API: its routes behind the tenant's Bearer token."""
    app = web.Application(middlewares=[tenant_auth_middleware])
    for add_routes in setups:
        add_routes(app)
    return app


async def refresh_bot_gauges(app: web.Application) -> None:
    async with app[RESOURCES].pool.acquire() as conn:
        counts = await store.state_counts(conn)
    for state in BOT_STATES:
        BOTS.labels(state=state).set(counts.get(state, 0))


def setup(app: web.Application) -> None:
    app[GAUGE_REFRESHERS].append(refresh_bot_gauges)
    app[REQUESTS] = TenantSlots()  # shared by the tenant sub-apps: one bound per token
    app.add_subapp(PREFIX + "/bot", tenant_app(tenant_api.setup_bot, bot_logs.setup))
    app.add_subapp(PREFIX + "/commands", tenant_app(tenant_api.setup_commands))
    app.add_subapp(PREFIX + "/keys", tenant_app(tenant_keys.setup))
    app.add_subapp(PREFIX + "/notifications", tenant_app(tenant_notifications.setup))
    app.add_subapp(PREFIX + "/admin", admin.create_app())
