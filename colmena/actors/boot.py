"""The module Dramatiq's CLI imports in each worker process: settings -> broker with actors."""

from __future__ import annotations

from colmena.actors import all_actors
from colmena.config import load_settings
from colmena.config.logging import configure_logging
from colmena.runtime.broker import build_broker
from colmena.runtime.startup import amqp_resources

settings = load_settings()
configure_logging(dev=settings.env == "dev", level=settings.log_level)
resources = amqp_resources(settings)
broker = build_broker(
    settings,
    resources,
    all_actors(),
    broker_url=settings.broker_urls(),
    metrics=True,
    quorum=settings.quorum_queues,
)
