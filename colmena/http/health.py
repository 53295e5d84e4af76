"""Liveness, readiness and metrics: what orchestrators and Prometheus ask of every ingress.

`/healthz` and `/readyz` are on the public listener. `/metrics` is not: queue depths, payment
and security counters and tenants' bot states are for Prometheus alone, so the ingress process
serves them on a listener of their own (`metrics_app`, COLMENA_INGRESS_METRICS_PORT).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from colmena.config.metrics import (
    BACKUP_LAST_SUCCESS,
    BACKUP_MAX_AGE,
    OUTBOX_OLDEST_AGE,
    OUTBOX_PENDING,
)
from colmena.http.context import RESOURCES, SETTINGS
from colmena.http.middlewares import security_headers
from colmena.store.backups import last_good_backup
from colmena.store.outbox import backlog

log = structlog.get_logger(__name__)

READY_TIMEOUT_S = 3.0
GaugeRefresher = Callable[[web.Application], Awaitable[None]]
GAUGE_REFRESHERS = web.AppKey("gauge_refreshers", list[GaugeRefresher])


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def _database_ok(app: web.Application) -> bool:
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            resources = app[RESOURCES]
            await resources.start()
            async with resources.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        return True
    except Exception as exc:  # any failure means "not ready"; the reason goes to the log
        log.warning("readiness: database unreachable", error=type(exc).__name__)
        return False


async def _broker_ok(app: web.Application) -> bool:
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            return await app[RESOURCES].publisher.check()
    except TimeoutError:
        return False


async def readyz(request: web.Request) -> web.Response:
    database, broker = await asyncio.gather(_database_ok(request.app), _broker_ok(request.app))
    checks = {
        "database": "ok" if database else "unreachable",
        "broker": "ok" if broker else "unreachable",
    }
    if database and broker:
        return web.json_response({"status": "ready", "checks": checks})
    return web.json_response(
        {
            "error": {
                "code": "not_ready",
                "message": "a dependency is unreachable",
                "checks": checks,
            }
        },
        status=503,
    )


async def refresh_outbox_gauges(app: web.Application) -> None:
    async with app[RESOURCES].pool.acquire() as conn:
        pending, oldest = await backlog(conn)
    OUTBOX_PENDING.set(pending)
    OUTBOX_OLDEST_AGE.set(oldest)


async def refresh_backup_gauges(app: web.Application) -> None:
    """When the last good backup finished (0: none yet), wherever it was taken, and the age
    past which ColmenaBackupTooOld fires."""
    async with app[RESOURCES].pool.acquire() as conn:
        last = await last_good_backup(conn)
    finished = last.finished_at if last is not None else None
    BACKUP_LAST_SUCCESS.set(finished.timestamp() if finished is not None else 0)
    BACKUP_MAX_AGE.set(app[SETTINGS].backup_max_age_hours * 3600)


async def _exposition(ingress: web.Application) -> web.Response:
    """Prometheus text; the ingress's gauges derived from the database and the broker are
    refreshed first, best effort."""
    for refresh in ingress[GAUGE_REFRESHERS]:
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await refresh(ingress)
        except Exception as exc:  # a stale gauge is better than a failed scrape
            log.warning(
                "metrics: gauge refresh failed",
                refresher=refresh.__name__,
                error=type(exc).__name__,
            )
    response = web.Response(body=generate_latest())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def add_metrics_route(app: web.Application, *, ingress: web.Application) -> None:
    """Serve `ingress`'s metrics at /metrics on `app` (its own listener, or in `colmena dev`,
    where one port serves everything, the ingress app itself)."""

    async def metrics(_request: web.Request) -> web.Response:
        return await _exposition(ingress)

    app.router.add_get("/metrics", metrics)


def metrics_app(ingress: web.Application) -> web.Application:
    """The ingress's metrics listener: /metrics and nothing else."""
    app = web.Application()
    app.on_response_prepare.append(security_headers)
    add_metrics_route(app, ingress=ingress)
    return app


def setup(app: web.Application) -> None:
    app[GAUGE_REFRESHERS].append(refresh_outbox_gauges)
    app[GAUGE_REFRESHERS].append(refresh_backup_gauges)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
