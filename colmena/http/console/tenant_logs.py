"""The tenant's bot log page (`/console/tenant/logs`) and its live stream (`.../logs/stream`).

Both read the session's tenant only; the component itself (`live_logs`) is shared with the
operator pages, which name the tenant in their path.
"""

from __future__ import annotations

from aiohttp import web

from colmena.http.console.core import render
from colmena.http.console.live_logs import live_log_stream, recent_log
from colmena.http.console.tenant_common import URL, route, session_tenant

PAGE = f"{URL}/logs"
STREAM = f"{PAGE}/stream"


async def show(request: web.Request) -> web.Response:
    tail = await recent_log(request, session_tenant(request))
    return render(
        request,
        "console/tenant/logs.html",
        {"tail": tail, "stream_url": STREAM, "refresh_url": PAGE},
    )


async def stream(request: web.Request) -> web.StreamResponse:
    return await live_log_stream(request, session_tenant(request))


def register(console: web.Application) -> None:
    console.router.add_get(route(PAGE), show, name="tenant-logs")
    console.router.add_get(route(STREAM), stream, name="tenant-logs-stream")
