"""Running the ingress as a process: check the database, then serve until SIGTERM.

Two listeners: the public one (COLMENA_HTTP_PORT) and the metrics one
(COLMENA_INGRESS_METRICS_PORT), which only Prometheus should reach.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

from colmena.config import Settings
from colmena.config.logging import configure_logging
from colmena.http.app import create_app
from colmena.http.health import metrics_app
from colmena.runtime.ports import ensure_port_free
from colmena.runtime.queues import DOMAIN_QUEUES
from colmena.runtime.startup import amqp_resources, check_database, checked_broker_urls

log = structlog.get_logger(__name__)


def _metrics_listener(
    settings: Settings,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context serving the ingress's metrics while the ingress runs."""

    async def serve(ingress: web.Application) -> AsyncIterator[None]:
        runner = web.AppRunner(metrics_app(ingress), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, settings.http_host, settings.ingress_metrics_port).start()
        log.info(
            "ingress metrics listening", host=settings.http_host, port=settings.ingress_metrics_port
        )
        yield
        await runner.cleanup()

    return serve


def run_ingress(settings: Settings) -> None:
    """Serve the ingress until SIGTERM; aiohttp then stops accepting and drains handlers."""
    configure_logging(dev=settings.env == "dev", level=settings.log_level)
    ensure_port_free(settings.http_host, settings.http_port, "COLMENA_HTTP_PORT")
    ensure_port_free(
        settings.http_host, settings.ingress_metrics_port, "COLMENA_INGRESS_METRICS_PORT"
    )
    asyncio.run(check_database(settings.require_database_url()))
    # A queue declared with other arguments (classic vs quorum) stops the start here, in one
    # line, rather than failing every publish; silent nodes are named and dialled last.
    broker_urls = checked_broker_urls(settings, DOMAIN_QUEUES)
    app = create_app(settings, amqp_resources(settings, broker_urls))
    app.cleanup_ctx.append(_metrics_listener(settings))
    log.info("ingress listening", host=settings.http_host, port=settings.http_port)
    web.run_app(
        app,
        host=settings.http_host,
        port=settings.http_port,
        shutdown_timeout=30,
        access_log=None,
        print=None,
    )
