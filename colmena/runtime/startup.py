"""Start-up of colmena's long-running processes: the checks they share, the worker pool and the
scheduler (the ingress starts in `colmena.http.server`).

Each checks what it depends on before serving and fails with one line an operator can act on,
because a traceback from asyncpg is no way to learn that `colmena migrate` was forgotten.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import asyncpg
import structlog

from colmena.config import Settings, SettingsError
from colmena.config.logging import configure_logging
from colmena.config.readiness import require_ready
from colmena.errors import StartupError
from colmena.runtime import scheduler
from colmena.runtime.ports import ensure_port_free, serve_metrics
from colmena.runtime.publisher import AmqpPublisher, LeaveToRelay
from colmena.runtime.queues import DOMAIN_QUEUES
from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import ScheduledJob
from colmena.store.migrate import SchemaNotMigrated, apply_migrations, ensure_migrated
from colmena.store.pool import connect

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0


async def open_database(database_url: str) -> asyncpg.Connection:
    try:
        return await connect(database_url, timeout=CONNECT_TIMEOUT_S)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        reason = str(exc) or type(exc).__name__
        raise StartupError(f"cannot reach the database (COLMENA_DATABASE_URL): {reason}") from None


async def migrate(database_url: str) -> list[str]:
    conn = await open_database(database_url)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()


async def check_database(database_url: str) -> None:
    conn = await open_database(database_url)
    try:
        await ensure_migrated(conn)
    except SchemaNotMigrated as exc:
        raise StartupError(str(exc)) from None
    finally:
        await conn.close()


def amqp_resources(settings: Settings) -> Resources:
    publisher = AmqpPublisher(
        settings.require_broker_url(), settings.queue_prefix, quorum=settings.quorum_queues
    )
    return Resources(settings, database_url=settings.require_database_url(), publisher=publisher)


def operator_resources(settings: Settings) -> Resources:
    """Resources for an operator command: RabbitMQ when configured, else the outbox alone (the
    running `colmena dev` relays what the command records)."""
    if settings.broker_url is not None:
        return amqp_resources(settings)
    return Resources(
        settings, database_url=settings.require_database_url(), publisher=LeaveToRelay()
    )


def worker_command(
    settings: Settings, queues: list[str], processes: int, threads: int
) -> tuple[list[str], dict[str, str]]:
    """The Dramatiq CLI invocation (argv, environment) for a pool of worker processes.

    Dramatiq's CLI owns process management, graceful SIGTERM (finish or requeue) and the
    Prometheus exposition server; we only translate our settings into its arguments.
    """
    unknown = sorted(set(queues) - set(DOMAIN_QUEUES))
    if unknown:
        raise SettingsError(
            f"unknown queue(s) {', '.join(unknown)}; known: {', '.join(DOMAIN_QUEUES)}"
        )
    metrics_dir = Path(settings.data_dir, "metrics").resolve()
    metrics_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "dramatiq_prom_db": str(metrics_dir),
        "dramatiq_prom_port": str(settings.metrics_port),
        "dramatiq_prom_host": settings.http_host,
        "dramatiq_queue_prefetch": str(threads * settings.worker_prefetch),
    }
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        "colmena.actors.boot",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        "--skip-logging",
        "--queues",
        *(settings.queue_prefix + queue for queue in queues),
    ]
    return argv, env


def run_worker(settings: Settings, queues: list[str], processes: int, threads: int) -> None:
    settings.require_broker_url()
    require_ready(settings, queues)
    ensure_port_free(settings.http_host, settings.metrics_port, "COLMENA_METRICS_PORT")
    asyncio.run(check_database(settings.require_database_url()))
    argv, env = worker_command(settings, queues, processes, threads)
    os.execvpe(argv[0], argv, env)


def run_scheduler(settings: Settings, jobs: list[ScheduledJob]) -> None:
    configure_logging(dev=settings.env == "dev", level=settings.log_level)
    asyncio.run(check_database(settings.require_database_url()))
    serve_metrics(settings)
    resources = amqp_resources(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await resources.start()
            await scheduler.run_forever(resources, jobs, stop)
        finally:
            await resources.close()

    asyncio.run(main())
