"""`GET /api/v1/bot/logs` and its server-sent-events stream, read from the database only.

The supervisor side ships bots' lines into `bot_logs`; the ingress holds no runtime, no Docker
client and no thread for a stream. A stream sends the last `tail` lines, then polls the table
every COLMENA_BOT_SSE_POLL_SECONDS for newer ones (one short query on a pooled connection,
none held in between), with `: keepalive` comments while the log is quiet. It ends with
`event: end` once the bot is stopped and every line was sent, after COLMENA_BOT_SSE_MAX_SECONDS,
or when the client goes (the next write fails). Streams per tenant are capped per process, and
so are log reads (COLMENA_TENANT_MAX_LOG_READS), each slot checked and taken with no await in
between (`colmena.http.tenant_limits`), so concurrent opens cannot overshoot it. An open stream
counts against the stream cap, no longer against the tenant's requests in flight.
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from colmena.http.context import SETTINGS
from colmena.http.errors import ApiError
from colmena.http.payloads import field_errors
from colmena.http.tenant_auth import REQUEST_SLOT, TENANT
from colmena.http.tenant_limits import TenantSlots, held, tenant_connection
from colmena.store import bot_logs as store
from colmena.store.tenants import bot_is_stopped

log = structlog.get_logger(__name__)

MAX_TAIL = 1000
BATCH = 500
END_EVENT = b"event: end\ndata: the bot's log ended\n\n"

LOG_STREAMS = web.AppKey("bot_log_streams", TenantSlots)
LOG_READS = web.AppKey("bot_log_reads", TenantSlots)


def _tail(request: web.Request, default: int) -> int:
    raw = request.query.get("tail", str(default))
    if not (raw.isascii() and raw.isdigit()) or not 0 <= int(raw) <= MAX_TAIL:
        raise field_errors([("tail", f"an integer from 0 to {MAX_TAIL}")], "tail is not valid")
    return int(raw)


def _no_logs() -> ApiError:
    return ApiError(404, "no_bot", "the bot has not logged anything yet")


async def bot_logs(request: web.Request) -> web.Response:
    tenant = request[TENANT]
    tail = _tail(request, 100)
    limit = request.config_dict[SETTINGS].tenant_max_log_reads
    reads = request.config_dict[LOG_READS]
    with held(reads, tenant.id, limit, code="too_many_log_reads", what="log reads"):
        async with tenant_connection(request) as conn:
            if await store.last_seq(conn, tenant.id) is None:
                raise _no_logs()
            lines = await store.newest(conn, tenant.id, tail) if tail else []
    return web.json_response({"lines": [line.line for line in lines]})


async def bot_log_stream(request: web.Request) -> web.StreamResponse:
    tenant = request[TENANT]
    settings = request.config_dict[SETTINGS]
    tail = _tail(request, 0)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    with held(
        request.config_dict[LOG_STREAMS],
        tenant.id,
        settings.bot_sse_max_streams_per_tenant,
        code="too_many_streams",
        what="log streams",
    ):
        try:
            async with tenant_connection(request) as conn:
                last = await store.last_seq(conn, tenant.id)
                if last is None:
                    raise _no_logs()
                backlog = await store.newest(conn, tenant.id, tail) if tail else []
            await response.prepare(request)
            request[REQUEST_SLOT].release()
            for line in backlog:
                await response.write(log_event(line.line))
            seen = max([last, *(line.seq for line in backlog)])
            await follow_log(request, response, tenant.id, seen)
        except ConnectionError:
            if not response.prepared:
                raise
            log.info("log stream client went away")
        except ApiError as exc:  # the database stayed busy: end the open stream, the client retries
            if not response.prepared:
                raise
            log.warning("log stream ended", reason=exc.error_message)
    return response


async def follow_log(
    request: web.Request, response: web.StreamResponse, tenant_id: str, seen: int
) -> None:
    """Send lines after `seen` as they arrive, until the bot stopped or the stream's time is up."""
    settings = request.config_dict[SETTINGS]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.bot_sse_max_seconds
    quiet_since = loop.time()
    while (left := deadline - loop.time()) > 0:
        async with tenant_connection(request) as conn:
            lines = await store.after(conn, tenant_id, seen, BATCH)
            stopped = not lines and await bot_is_stopped(conn, tenant_id)
        if lines:
            for line in lines:
                await response.write(log_event(line.line))
            seen, quiet_since = lines[-1].seq, loop.time()
            continue
        if stopped:
            await response.write(END_EVENT)
            return
        if loop.time() - quiet_since >= settings.bot_sse_keepalive_seconds:
            await response.write(b": keepalive\n\n")
            quiet_since = loop.time()
        await asyncio.sleep(min(settings.bot_sse_poll_seconds, left))


def log_event(line: str) -> bytes:
    return b"data: " + line.replace("\r", "").encode() + b"\n\n"


def setup(bot_app: web.Application) -> None:
    """Log routes of the sub-app mounted at /api/v1/bot."""
    bot_app[LOG_STREAMS] = TenantSlots()
    bot_app[LOG_READS] = TenantSlots()
    bot_app.router.add_get("/logs", bot_logs)
    bot_app.router.add_get("/logs/stream", bot_log_stream)
