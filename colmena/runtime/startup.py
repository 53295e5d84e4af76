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
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import structlog
from asyncpg.exceptions import TargetServerAttributeNotMatched

from colmena.config import Settings, SettingsError
from colmena.config.database_url import parse_database_url
from colmena.config.logging import configure_logging
from colmena.config.readiness import require_ready
from colmena.errors import StartupError
from colmena.runtime import scheduler
from colmena.runtime.broker_check import check_broker
from colmena.runtime.ports import ensure_port_free, serve_metrics
from colmena.runtime.publisher import AmqpPublisher, LeaveToRelay
from colmena.runtime.queues import DOMAIN_QUEUES
from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import ScheduledJob
from colmena.store.migrate import SchemaNotMigrated, apply_migrations, ensure_migrated
from colmena.store.pool import STANDBY, connect, node_roles

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0
WORKER_BOOT = "colmena.actors.boot"
WORKER_CLI = "colmena.runtime.worker_cli"


async def open_database(database_url: str) -> asyncpg.Connection:
    """A writable connection, or one line saying why there is none: with several hosts (or a
    lone standby) it names what each host is, since asyncpg reports only the last failure."""
    try:
        return await connect(database_url, timeout=CONNECT_TIMEOUT_S)
    except (TimeoutError, OSError, asyncpg.PostgresError, TargetServerAttributeNotMatched) as exc:
        target = parse_database_url(database_url)
        if len(target.hosts) > 1 or isinstance(exc, TargetServerAttributeNotMatched):
            raise StartupError(await _no_writable_node(database_url)) from None
        reason = str(exc) or type(exc).__name__
        raise StartupError(f"cannot reach the database (COLMENA_DATABASE_URL): {reason}") from None


async def _no_writable_node(database_url: str) -> str:
    target = parse_database_url(database_url)
    roles = await node_roles(database_url, timeout=CONNECT_TIMEOUT_S)
    if all(role == STANDBY for _, role in roles):
        found = "all are standbys" if len(roles) > 1 else "it is a standby"
    else:
        found = "; ".join(f"{host} {role}" for host, role in roles)
    return (
        f"no writable PostgreSQL among {target.describe_hosts()} (COLMENA_DATABASE_URL): "
        f"{found} (target_session_attrs={target.session_attrs})"
    )


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


def amqp_publisher(settings: Settings, broker_urls: list[str] | None = None) -> AmqpPublisher:
    """The process's publisher to every broker node (`broker_urls`, answering nodes first, as
    `checked_broker_urls` orders them; else as configured), queues declared as configured."""
    return AmqpPublisher(
        broker_urls or settings.broker_urls(), settings.queue_prefix, quorum=settings.quorum_queues
    )


def amqp_resources(settings: Settings, broker_urls: list[str] | None = None) -> Resources:
    return Resources(
        settings,
        database_url=settings.require_database_url(),
        publisher=amqp_publisher(settings, broker_urls),
    )


def checked_broker_urls(settings: Settings, queues: Sequence[str]) -> list[str]:
    """The broker check (`colmena.runtime.broker_check`) for a process using `queues`: one
    warning per silent node, QueueMismatch if a queue exists with other arguments; the node
    URLs, answering ones first."""
    return check_broker(
        settings.broker_urls(), settings.queue_prefix, queues, quorum=settings.quorum_queues
    )


def operator_resources(settings: Settings) -> Resources:
    """Resources for an operator command: RabbitMQ when configured, else the outbox alone (the
    running `colmena dev` relays what the command records)."""
    if settings.broker_url is not None:
        return amqp_resources(settings)
    return Resources(
        settings, database_url=settings.require_database_url(), publisher=LeaveToRelay()
    )


def worker_command(
    settings: Settings,
    queues: list[str],
    processes: int,
    threads: int,
    *,
    boot: str = WORKER_BOOT,
) -> tuple[list[str], dict[str, str]]:
    """The invocation (argv, environment) of a pool of worker processes.

    Dramatiq's CLI owns process management, graceful SIGTERM (finish or requeue) and the
    Prometheus exposition server; `colmena.runtime.worker_cli` runs it with the loop worker in
    each process. We only translate our settings into its arguments. `boot` is the module each
    worker process imports for its broker (bench/workers.py passes a no-op one, to time exactly
    this start-up).
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
        WORKER_CLI,
        boot,
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
    """Check what the pool depends on, then become Dramatiq's CLI. The broker check's node
    order (answering nodes first) is handed down, so worker processes dial a live node first
    and only this process warns about the silent ones."""
    settings.broker_urls()
    require_ready(settings, queues)
    ensure_port_free(settings.http_host, settings.metrics_port, "COLMENA_METRICS_PORT")
    asyncio.run(check_database(settings.require_database_url()))
    broker_urls = checked_broker_urls(settings, queues)
    argv, env = worker_command(settings, queues, processes, threads)
    env["COLMENA_BROKER_URL"] = ",".join(broker_urls)
    os.execvpe(argv[0], argv, env)


def run_scheduler(settings: Settings, jobs: list[ScheduledJob]) -> None:
    configure_logging(dev=settings.env == "dev", level=settings.log_level)
    asyncio.run(check_database(settings.require_database_url()))
    serve_metrics(settings)
    resources = amqp_resources(settings, checked_broker_urls(settings, DOMAIN_QUEUES))

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
