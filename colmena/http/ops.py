"""Queue depth and consumer gauges, read from RabbitMQ each time Prometheus scrapes an ingress.

Workers cannot report their own queue's depth (an idle pool has nothing to say, a dead one says
nothing), so the ingress asks RabbitMQ with passive declares. Without a broker URL (`colmena dev`
on the in-process broker) there is nothing to read and the gauges stay absent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from colmena.config.metrics import QUEUE_CONSUMERS, QUEUE_DEPTH
from colmena.http.context import SETTINGS
from colmena.http.health import GAUGE_REFRESHERS
from colmena.runtime.queue_probe import QueueProbe
from colmena.runtime.queues import DOMAIN_QUEUES

PROBE = web.AppKey("queue_probe", QueueProbe)


async def refresh_queue_gauges(app: web.Application) -> None:
    for depth in await app[PROBE].depths(DOMAIN_QUEUES):
        QUEUE_DEPTH.labels(queue=depth.queue, kind="ready").set(depth.ready)
        QUEUE_DEPTH.labels(queue=depth.queue, kind="delayed").set(depth.delayed)
        QUEUE_DEPTH.labels(queue=depth.queue, kind="dead").set(depth.dead)
        QUEUE_CONSUMERS.labels(queue=depth.queue).set(depth.consumers)


async def _close_probe(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[PROBE].close()


def setup(app: web.Application) -> None:
    settings = app[SETTINGS]
    if settings.broker_url is None:
        return
    app[PROBE] = QueueProbe(settings.require_broker_url(), settings.queue_prefix)
    app[GAUGE_REFRESHERS].append(refresh_queue_gauges)
    app.cleanup_ctx.append(_close_probe)
