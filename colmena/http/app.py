"""The ingress application factory: settings in, a ready `web.Application` out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import structlog
from aiohttp import web

from colmena.actors.outbox import publish_now
from colmena.config import Settings
from colmena.http import health
from colmena.http.context import RESOURCES, SETTINGS
from colmena.http.middlewares import DEFAULT_LIMITER, MAX_BODY, MIDDLEWARES, RATE_LIMITERS
from colmena.http.ratelimit import RateLimiter
from colmena.resources import Resources
from colmena.store.outbox import OutboxMessage

log = structlog.get_logger(__name__)

ROUTE_MODULES = (
    health,
)
BACKGROUND = web.AppKey("background_publishes", set)
DRAIN_TIMEOUT_S = 10.0


def publish_in_background(app: web.Application, rows: Sequence[OutboxMessage | None]) -> None:
    """Publish committed outbox rows without making the client wait on RabbitMQ.

    The response never depends on this succeeding: the rows are durable and the relay sends
    whatever this misses (DESIGN.md rule 1: RabbitMQ down still answers 2xx).
    """
    resources = app[RESOURCES]
    task = asyncio.create_task(publish_now(resources.pool, resources.publisher, rows))
    tasks = app[BACKGROUND]
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("after-commit publish failed; the relay will send it", error=type(task.exception()).__name__)


async def _resources_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[RESOURCES].start()
    yield
    pending = list(app[BACKGROUND])
    if pending:
        await asyncio.wait(pending, timeout=DRAIN_TIMEOUT_S)
    await app[RESOURCES].close()


def set_route_limit(app: web.Application, route: str, per_minute: int, *, burst: int | None = None) -> None:
    """Give one route (by its template) its own per-IP limit instead of the default."""
    app[RATE_LIMITERS][route] = RateLimiter(per_minute, burst=burst)


def create_app(settings: Settings, resources: Resources) -> web.Application:
    app = web.Application(middlewares=MIDDLEWARES, client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[RESOURCES] = resources
    app[MAX_BODY] = settings.max_body_bytes
    app[RATE_LIMITERS] = {}
    app[DEFAULT_LIMITER] = RateLimiter(settings.rate_limit_per_minute)
    app[BACKGROUND] = set()
    app[health.GAUGE_REFRESHERS] = []
    for module in ROUTE_MODULES:
        module.setup(app)
    app.cleanup_ctx.append(_resources_ctx)
    return app
