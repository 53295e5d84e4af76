"""Operators' reports over HTTP, on the admin sub-app (behind COLMENA_BOT_ADMIN_TOKEN):

- `GET /api/v1/admin/reports/{kind}?from=&to=[&provider=][&format=json|csv]`: the same rows
  and totals as `colmena report <kind>`, streamed as they are read (a server-side cursor into
  a chunked answer), JSON by default, CSV (UTF-8 with BOM) on request;
- `GET /api/v1/admin/reconcile?from=&to=[&provider=]`: the disagreements of
  `colmena reconcile report` (without the provider check, which calls the providers' APIs and
  belongs to the operator's command), as JSON with `ok`.

A bad range is a 400 `invalid_parameter` before anything is read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from aiohttp import web

from colmena.config import Settings
from colmena.domain.report_rows import (
    PROVIDERS,
    SPECS,
    Renderer,
    ReportRange,
    ReportRangeError,
    json_text,
    parse_range,
)
from colmena.http.context import RESOURCES, SETTINGS
from colmena.http.errors import ApiError
from colmena.http.payloads import bad_parameter, query_params
from colmena.store import audit, reconciliation, reports

AUDIT_HEAD_HEADER = "X-Colmena-Audit-Head"  # SEQ:HASH of the chain when the export began

WRITE_BYTES = 64 * 1024  # what is gathered before one write to the socket
MEDIA = {"json": "application/json", "csv": "text/csv"}


def _range(settings: Settings, query: dict[str, str]) -> ReportRange:
    for name in ("from", "to"):
        if name not in query:
            raise bad_parameter(name, f"parameter {name!r} is required (a date, 2026-03-31)")
    try:
        return parse_range(
            query["from"],
            query["to"],
            zone=settings.operator_zone(),
            max_days=settings.report_max_days,
        )
    except ReportRangeError as exc:
        raise bad_parameter(exc.parameter, str(exc).replace("--", "")) from None


def _provider(query: dict[str, str]) -> str | None:
    provider = query.get("provider")
    if provider is not None and provider not in PROVIDERS:
        raise bad_parameter("provider", f"provider is one of {', '.join(PROVIDERS)}")
    return provider


async def report(request: web.Request) -> web.StreamResponse:
    kind = request.match_info["kind"]
    if kind not in SPECS or kind == "audit":
        raise ApiError(404, "not_found", f"no report {kind!r}; reports: {', '.join(SPECS)}")
    return await _report(request, kind)


async def audit_report(request: web.Request) -> web.StreamResponse:
    """The audit trail has no provider: its own route, so no `provider` is documented for it."""
    return await _report(request, "audit")


async def _report(request: web.Request, kind: str) -> web.StreamResponse:
    allowed = {"from", "to", "format"} | ({"provider"} if kind != "audit" else set())
    query = query_params(request, allowed)
    settings = request.config_dict[SETTINGS]
    period = _range(settings, query)
    provider = _provider(query)
    fmt = query.get("format", "json")
    if fmt not in MEDIA:
        raise bad_parameter("format", "format is json or csv")
    renderer = Renderer(SPECS[kind], period, fmt, settings.operator_time_zone)
    headers = _headers(kind, fmt, period)
    async with request.config_dict[RESOURCES].pool.acquire() as conn:
        if kind == "audit":
            headers[AUDIT_HEAD_HEADER] = await _sealed_head(conn)
        rows = reports.report_rows(
            conn,
            kind,
            period.start,
            period.end,
            provider=provider,
            fetch=settings.report_fetch_rows,
        )
        try:
            first = await anext(rows, None)
        except asyncpg.UndefinedTableError:
            raise ApiError(
                503, "not_migrated", f"the {kind} report's table is missing: run colmena migrate"
            ) from None
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        await _send(response, renderer, first, rows)
        await response.write_eof()
    return response


async def _sealed_head(conn: asyncpg.Connection) -> str:
    """Seal what is waiting and name the chain's head, so the export can later be held against
    the database (`colmena audit verify --head SEQ:HASH`). A database without the audit tables
    is the same 503 as any missing report table."""
    try:
        await audit.seal(conn)
        seq, digest = await audit.head(conn)
    except asyncpg.UndefinedTableError:
        raise ApiError(
            503, "not_migrated", "the audit report's table is missing: run colmena migrate"
        ) from None
    return f"{seq}:{digest.hex()}"


def _headers(kind: str, fmt: str, period: ReportRange) -> dict[str, str]:
    headers = {"Content-Type": f"{MEDIA[fmt]}; charset=utf-8", "Cache-Control": "no-store"}
    if fmt == "csv":
        first = period.start.astimezone(period.zone).date()
        headers["Content-Disposition"] = f'attachment; filename="{kind}-{first}.csv"'
    return headers


async def _send(
    response: web.StreamResponse,
    renderer: Renderer,
    first: dict[str, Any] | None,
    rest: AsyncIterator[dict[str, Any]],
) -> None:
    """Write the report as its rows arrive, in writes of about WRITE_BYTES."""
    pending = [renderer.head()]
    size = len(pending[0])
    if first is not None:
        pending.append(renderer.row(first))
        async for row in rest:
            text = renderer.row(row)
            pending.append(text)
            size += len(text)
            if size >= WRITE_BYTES:
                await response.write("".join(pending).encode())
                pending, size = [], 0
    pending.append(renderer.tail())
    await response.write("".join(pending).encode())


async def reconcile(request: web.Request) -> web.Response:
    query = query_params(request, {"from", "to", "provider"})
    settings = request.config_dict[SETTINGS]
    period = _range(settings, query)
    provider = _provider(query)
    async with request.config_dict[RESOURCES].pool.acquire() as conn:
        found = await reconciliation.find_disagreements(
            conn,
            period.start,
            period.end,
            provider=provider,
            grace=settings.reconcile_grace(),
            fetch=settings.report_fetch_rows,
        )
    document = {
        "from": period.local(period.start),
        "to": period.local(period.end),
        "time_zone": settings.operator_time_zone,
        "ok": not found,
        "disagreements": [d.as_json() for d in found],
    }
    return web.Response(text=json_text(document), content_type="application/json")


def setup(admin: web.Application) -> None:
    """Add the report routes to the admin sub-app (its middleware checks the admin token)."""
    admin.router.add_get("/reports/audit", audit_report)  # before {kind}, which it would match
    admin.router.add_get("/reports/{kind}", report)
    admin.router.add_get("/reconcile", reconcile)
