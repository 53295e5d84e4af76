"""Listening ports of colmena's processes: refused at start with one line, and the scheduler's
Prometheus endpoint.

The scheduler has no HTTP server of its own, yet it runs the outbox relay, the license clean-up
and the CSD expiry check, so their counters and `colmena_csd_days_left` live in its memory;
Prometheus scrapes them on COLMENA_SCHEDULER_METRICS_PORT (workers serve theirs on
COLMENA_METRICS_PORT through Dramatiq's middleware, the ingress on /metrics). Each has its own
setting so that all three run on one host.
"""

from __future__ import annotations

import errno
import socket

from prometheus_client import start_http_server

from colmena.config import Settings
from colmena.errors import StartupError


def port_in_use(host: str, port: int, setting: str) -> StartupError:
    return StartupError(
        f"port {port} on {host} is in use ({setting}): stop what holds it or set another"
    )


def ensure_port_free(host: str, port: int, setting: str) -> None:
    """Fail with one line before a process that will listen on `port` starts its work."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise port_in_use(host, port, setting) from None
            raise StartupError(f"cannot listen on {host}:{port} ({setting}): {exc}") from None


def serve_metrics(settings: Settings) -> None:
    """Serve this process's registry on a daemon thread until the process exits."""
    try:
        start_http_server(settings.scheduler_metrics_port, addr=settings.http_host)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise port_in_use(
                settings.http_host,
                settings.scheduler_metrics_port,
                "COLMENA_SCHEDULER_METRICS_PORT",
            ) from None
        raise
