"""Prometheus endpoint for processes that have no HTTP server of their own (the scheduler).

The scheduler runs the outbox relay, the license clean-up and the CSD expiry check, so their
counters and `colmena_csd_days_left` live in its memory; Prometheus scrapes them from here on
COLMENA_METRICS_PORT (workers serve theirs through Dramatiq's middleware, the ingress on /metrics).
"""

from __future__ import annotations

from prometheus_client import start_http_server

from colmena.config import Settings


def serve_metrics(settings: Settings) -> None:
    """Serve this process's registry on a daemon thread until the process exits."""
    start_http_server(settings.metrics_port, addr=settings.http_host)
