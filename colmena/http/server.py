"""Running the ingress as a process: check the database, then serve until SIGTERM."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from colmena.config import Settings
from colmena.config.logging import configure_logging
from colmena.http.app import create_app
from colmena.runtime.ports import ensure_port_free
from colmena.runtime.startup import amqp_resources, check_database

log = structlog.get_logger(__name__)


def run_ingress(settings: Settings) -> None:
    """Serve the ingress until SIGTERM; aiohttp then stops accepting and drains handlers."""
    configure_logging(dev=settings.env == "dev", level=settings.log_level)
    ensure_port_free(settings.http_host, settings.http_port, "COLMENA_HTTP_PORT")
    asyncio.run(check_database(settings.require_database_url()))
    app = create_app(settings, amqp_resources(settings))
    log.info("ingress listening", host=settings.http_host, port=settings.http_port)
    web.run_app(
        app,
        host=settings.http_host,
        port=settings.http_port,
        shutdown_timeout=30,
        access_log=None,
        print=None,
    )
