"""A bot's live log in the console: the last lines server-rendered, then server-sent events.

Both audiences use it: the tenant pages for the session's tenant, the operator pages for a tenant
named in the path. The stream is the API's (`colmena.http.bot_logs.follow_log`): read from the
database only, polled every COLMENA_BOT_SSE_POLL_SECONDS with keepalives, ended by `event: end`
once the bot is stopped and every line was sent, or after COLMENA_BOT_SSE_MAX_SECONDS. It is
bounded as the API is: per tenant and per process, COLMENA_BOT_SSE_MAX_STREAMS_PER_TENANT open
streams and COLMENA_TENANT_MAX_LOG_READS tail reads at once, each slot taken with no await in
between. The console counts its own slots (a console sub-app cannot reach the API sub-app's),
and operators' streams of a tenant apart from the tenant's own, so an operator watching never
takes a tenant's place.

A page renders the newest lines and the seq of the newest; its stream starts right after that
seq (`?after=`), so the live lines follow the rendered ones with no gap and no repeat.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from aiohttp import web

from colmena.http.bot_logs import MAX_TAIL, follow_log
from colmena.http.console.core import VIEWER, HtmlError
from colmena.http.console.tenant_common import refusal_message
from colmena.http.context import SETTINGS
from colmena.http.errors import ApiError
from colmena.http.tenant_limits import TenantSlots, held, tenant_connection
from colmena.store import bot_logs as store
from colmena.store.bot_logs import LogLine

log = structlog.get_logger(__name__)

TAIL = 100
_MAX_SEQ = 2**63 - 1
LOG_STREAMS = web.AppKey("console_log_streams", TenantSlots)
LOG_READS = web.AppKey("console_log_reads", TenantSlots)


@dataclass(frozen=True)
class LogTail:
    """The newest lines, oldest first, and the seq the live stream continues after."""

    lines: list[LogLine]
    last_seq: int


def setup(console: web.Application) -> None:
    """The console's log slots; call once on the console sub-app."""
    console[LOG_STREAMS] = TenantSlots()
    console[LOG_READS] = TenantSlots()


def _slot_key(request: web.Request, tenant_id: str) -> str:
    """Whose slots a request takes: the tenant's own, or the operators' for that tenant."""
    return tenant_id if request[VIEWER].kind == "tenant" else f"admin:{tenant_id}"


def _busy(exc: ApiError) -> HtmlError:
    """The tenant API's refusal (a bound reached, the pool busy) as the console's page."""
    return HtmlError(exc.status_code, refusal_message(exc), headers=exc.headers)


async def recent_log(request: web.Request, tenant_id: str, count: int = TAIL) -> LogTail:
    """The tenant's newest `count` lines for a page (one bounded read)."""
    limit = request.config_dict[SETTINGS].tenant_max_log_reads
    try:
        with held(
            request.config_dict[LOG_READS],
            _slot_key(request, tenant_id),
            limit,
            code="too_many_log_reads",
            what="log reads",
        ):
            async with tenant_connection(request) as conn:
                lines = await store.newest(conn, tenant_id, count)
    except ApiError as exc:
        raise _busy(exc) from None
    return LogTail(lines, lines[-1].seq if lines else 0)


def _after(request: web.Request) -> int | None:
    raw = request.query.get("after")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) > _MAX_SEQ:
        raise HtmlError(400, "after must be a log line number")
    return int(raw)


async def live_log_stream(request: web.Request, tenant_id: str) -> web.StreamResponse:
    """The handler body of a console log stream of `tenant_id` (the caller decides whose).

    `?after=N` starts after line N (at most MAX_TAIL lines back); without it, at the newest.
    A bound reached is a 429 page before the stream opens.
    """
    settings = request.config_dict[SETTINGS]
    after = _after(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    try:
        with held(
            request.config_dict[LOG_STREAMS],
            _slot_key(request, tenant_id),
            settings.bot_sse_max_streams_per_tenant,
            code="too_many_streams",
            what="log streams",
        ):
            async with tenant_connection(request) as conn:
                last = await store.last_seq(conn, tenant_id) or 0
            seen = last if after is None else max(min(after, last), last - MAX_TAIL)
            await response.prepare(request)
            await follow_log(request, response, tenant_id, seen)
    except ConnectionError:
        if not response.prepared:
            raise
        log.info("console log stream client went away")
    except ApiError as exc:
        if not response.prepared:
            raise _busy(exc) from None
        log.warning("console log stream ended", reason=exc.error_message)
    return response
