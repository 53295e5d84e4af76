"""Tenant console pages: a tenant runs their own bot from here (`/console/tenant/...`).

The home page shows the bot as the reconciler last saw it (the API's `bot_view`), the plan and
its limits; start, stop and restart take the API's path (`record_bot_command`: the desired state,
a queued command and its outbox message in one transaction, the tenant's commands in flight
bounded), attributed to the tenant in the audit trail. The config editor, the provider keys and
the live log are modules of their own; this one registers them all.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import structlog
from aiohttp import web

from colmena.http.console import (
    live_logs,
    tenant_config,
    tenant_keys,
    tenant_logs,
    tenant_notifications,
)
from colmena.http.console.core import VIEWER, HtmlError, form, render, see_other, translate
from colmena.http.console.tenant_common import (
    URL,
    connection,
    plain,
    refusal,
    route,
    session_tenant,
)
from colmena.http.context import SETTINGS
from colmena.http.errors import ApiError
from colmena.http.publishing import AFTER_COMMIT
from colmena.http.tenant_api import bot_view, record_bot_command
from colmena.http.tenant_limits import tenant_connection
from colmena.store import audit
from colmena.store import tenants as store

log = structlog.get_logger(__name__)

HOME = URL + "/"
_DONE = {
    "start": "Start requested: the bot starts shortly.",
    "stop": "Stop requested: the bot stops shortly.",
    "restart": "Restart requested: the bot restarts shortly.",
}


async def _home_context(request: web.Request, tenant_id: str) -> dict[str, Any]:
    async with connection(request) as conn:
        bot = await store.get_bot(conn, tenant_id)
    if bot is None:
        raise HtmlError(404, translate(request, "Your tenant no longer exists."))
    return {
        "bot": bot_view(bot),
        "plan": bot.plan,
        "max_capital": plain(bot.plan.max_capital),
        # To the second, in UTC and saying so: a tenant's zone is not known here.
        "observed_at": (
            bot.observed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            if bot.observed_at
            else None
        ),
        "error": None,
    }


async def home(request: web.Request) -> web.Response:
    context = await _home_context(request, session_tenant(request))
    return render(request, "console/tenant/home.html", context)


async def bot_command(request: web.Request) -> web.Response:
    """Start, stop or restart the session's bot, as `POST /api/v1/bot/{action}` does."""
    tenant_id = session_tenant(request)
    kind = request.match_info["action"]
    await form(request)
    limit = request.config_dict[SETTINGS].tenant_max_commands_in_flight
    try:
        async with tenant_connection(request) as conn, conn.transaction():
            await audit.attribute(conn, actor=request[VIEWER].audit_actor, cause="console")
            command_id, row = await record_bot_command(
                conn, tenant_id, kind, requested_by="tenant", in_flight_limit=limit
            )
    except ApiError as exc:  # a bound or the plan refused it: nothing changed
        context = await _home_context(request, tenant_id)
        context["error"] = refusal(request, exc)
        return render(request, "console/tenant/home.html", context, status=exc.status_code)
    request.config_dict[AFTER_COMMIT].submit([row])
    log.info("bot command accepted", kind=kind, command_id=str(command_id), via="console")
    return see_other(request, HOME, notice=translate(request, _DONE[kind]))


def register(console: web.Application) -> None:
    """Add the tenant pages to the console sub-app (routes under /console/tenant/)."""
    live_logs.setup(console)
    router = console.router
    router.add_get(route(HOME), home, name="tenant-home")
    router.add_post(route(URL + "/bot/{action:start|stop|restart}"), bot_command)
    tenant_config.register(console)
    tenant_logs.register(console)
    tenant_keys.register(console)
    tenant_notifications.register(console)
