"""`GET /api/v1/bot/logs` and its server-sent-events stream, read from the database only.

The supervisor side ships bots' lines into `bot_logs`; the ingress holds no runtime, no Docker
client and no thread for a stream. A stream sends the last `tail` lines, then polls the table
every COLMENA_BOT_SSE_POLL_SECONDS for newer ones (one short query on a pooled connection,
none held in between), with `: keepalive` comments while the log is quiet. It ends with
`event: end` once the bot is stopped and every line was sent, after COLMENA_BOT_SSE_MAX_SECONDS,
or when the client goes (the next write fails). Streams per tenant are capped per process: the
slot is checked and taken with no await in between, so concurrent opens cannot overshoot it.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import structlog
from aiohttp import web

from colmena.http.context import RESOURCES, SETTINGS
from colmena.http.errors import ApiError
from colmena.http.payloads import field_errors
from colmena.http.tenant_auth import TENANT
from colmena.store import bot_logs as store
from colmena.store.tenants import bot_is_stopped

log = structlog.get_logger(__name__)

MAX_TAIL = 1000
BATCH = 500
END_EVENT = b"event: end\ndata: the bot's log ended\n\n"


class StreamSlots:
    """Open log streams per tenant in this process; `take` and `release` never await."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def take(self, tenant_id: str, limit: int) -> bool:
        if self._open[tenant_id] >= limit:
            return False
        self._open[tenant_id] += 1
        return True

    def release(self, tenant_id: str) -> None:
        self._open[tenant_id] -= 1
        if self._open[tenant_id] <= 0:
            del self._open[tenant_id]

    def open_count(self, tenant_id: str) -> int:
        return self._open[tenant_id]


LOG_STREAMS = web.AppKey("bot_log_streams", StreamSlots)


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
    async with request.config_dict[RESOURCES].pool.acquire() as conn:
        if await store.last_seq(conn, tenant.id) is None:
            raise _no_logs()
        lines = await store.newest(conn, tenant.id, tail) if tail else []
    return web.json_response({"lines": [line.line for line in lines]})


async def bot_log_stream(request: web.Request) -> web.StreamResponse:
    tenant = request[TENANT]
    settings = request.config_dict[SETTINGS]
    tail = _tail(request, 0)
    slots = request.config_dict[LOG_STREAMS]
    if not slots.take(tenant.id, settings.bot_sse_max_streams_per_tenant):
        raise ApiError(
            429,
            "too_many_streams",
            f"at most {settings.bot_sse_max_streams_per_tenant} log streams at once",
        )
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    try:
        async with request.config_dict[RESOURCES].pool.acquire() as conn:
            last = await store.last_seq(conn, tenant.id)
            if last is None:
                raise _no_logs()
            backlog = await store.newest(conn, tenant.id, tail) if tail else []
        await response.prepare(request)
        for line in backlog:
            await response.write(_event(line.line))
        await _follow(request, response, tenant.id, max([last, *(line.seq for line in backlog)]))
    except ConnectionError:
        if not response.prepared:
            raise
        log.info("log stream client went away")
    finally:
        slots.release(tenant.id)
    return response


async def _follow(
    request: web.Request, response: web.StreamResponse, tenant_id: str, seen: int
) -> None:
    """Send lines after `seen` as they arrive, until the bot stopped or the stream's time is up."""
    settings = request.config_dict[SETTINGS]
    pool = request.config_dict[RESOURCES].pool
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.bot_sse_max_seconds
    quiet_since = loop.time()
    while (left := deadline - loop.time()) > 0:
        async with pool.acquire() as conn:
            lines = await store.after(conn, tenant_id, seen, BATCH)
            stopped = not lines and await bot_is_stopped(conn, tenant_id)
        if lines:
            for line in lines:
                await response.write(_event(line.line))
            seen, quiet_since = lines[-1].seq, loop.time()
            continue
        if stopped:
            await response.write(END_EVENT)
            return
        if loop.time() - quiet_since >= settings.bot_sse_keepalive_seconds:
            await response.write(b": keepalive\n\n")
            quiet_since = loop.time()
        await asyncio.sleep(min(settings.bot_sse_poll_seconds, left))


def _event(line: str) -> bytes:
    return b"data: " + line.replace("\r", "").encode() + b"\n\n"


def setup(bot_app: web.Application) -> None:
    """Log routes of the sub-app mounted at /api/v1/bot."""
    bot_app[LOG_STREAMS] = StreamSlots()
    bot_app.router.add_get("/logs", bot_logs)
    bot_app.router.add_get("/logs/stream", bot_log_stream)
