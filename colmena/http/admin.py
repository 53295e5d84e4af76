"""Operators' bot routes (`/api/v1/admin`), behind COLMENA_BOT_ADMIN_TOKEN (the sub-app's
middleware): every tenant's bot as the reconciler last saw it, and stopping one."""

from __future__ import annotations

from aiohttp import web

from colmena.domain.tenants import TENANT_ID
from colmena.http import reports
from colmena.http.context import RESOURCES
from colmena.http.errors import ApiError
from colmena.http.tenant_api import bot_view, queue_command
from colmena.http.tenant_auth import admin_auth_middleware
from colmena.store import tenants as store


async def admin_bots(request: web.Request) -> web.Response:
    async with request.config_dict[RESOURCES].pool.acquire() as conn:
        bots = await store.list_bots(conn)
    return web.json_response({"bots": [bot_view(bot) for bot in bots]})


async def admin_stop(request: web.Request) -> web.Response:
    tenant_id = request.match_info["tenant"]
    if not TENANT_ID.fullmatch(tenant_id):  # cannot exist (and may not reach SQL: NUL)
        raise ApiError(404, "not_found", "no such tenant")
    async with request.config_dict[RESOURCES].pool.acquire() as conn:
        if await store.get_tenant(conn, tenant_id) is None:
            raise ApiError(404, "not_found", "no such tenant")
    return await queue_command(request, tenant_id, "stop", requested_by="admin")


def create_app() -> web.Application:
    """The sub-app mounted at /api/v1/admin."""
    admin = web.Application(middlewares=[admin_auth_middleware])
    admin.router.add_get("/bots", admin_bots)
    admin.router.add_post("/bots/{tenant}/stop", admin_stop)
    reports.setup(admin)
    return admin
