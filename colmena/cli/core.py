"""Process commands: migrate, ingress, worker, scheduler, dev."""

from __future__ import annotations

import asyncio
import sys

import click

from colmena.actors import all_jobs
from colmena.config import load_settings
from colmena.dev import run_dev
from colmena.http.server import run_ingress
from colmena.runtime.queues import DOMAIN_QUEUES
from colmena.runtime.startup import migrate, run_scheduler, run_worker

EXIT_INTERRUPTED = 130


@click.command("migrate")
def migrate_command() -> None:
    """Apply pending database migrations (safe to run from several places at once)."""
    settings = load_settings()
    applied = asyncio.run(migrate(settings.require_database_url()))
    if applied:
        for name in applied:
            click.echo(f"applied {name}")
    else:
        click.echo("database is up to date")


@click.command("ingress")
def ingress_command() -> None:
    """Serve webhooks and the tenant API on COLMENA_HTTP_HOST:COLMENA_HTTP_PORT."""
    run_ingress(load_settings())


@click.command("worker")
@click.option(
    "--queues",
    default=",".join(DOMAIN_QUEUES),
    show_default=True,
    help="comma-separated queues this pool consumes",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="default: COLMENA_WORKER_PROCESSES",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="actors each process runs at once; default: COLMENA_WORKER_THREADS",
)
def worker_command(queues: str, processes: int | None, threads: int | None) -> None:
    """Run a pool of worker processes for some queues (SIGTERM drains it)."""
    settings = load_settings()
    names = [name.strip() for name in queues.split(",") if name.strip()]
    run_worker(
        settings, names, processes or settings.worker_processes, threads or settings.worker_threads
    )


@click.command("scheduler")
def scheduler_command() -> None:
    """Run periodic jobs: outbox relay, rate scraping, bot reconciliation, clean-ups."""
    run_scheduler(load_settings(), all_jobs())


@click.command("dev")
def dev_command() -> None:
    """Everything in one process, embedded database and broker unless URLs are set."""
    settings = load_settings(env="dev")
    try:
        asyncio.run(run_dev(settings))
    except KeyboardInterrupt:
        # Ctrl-C before the signal handlers are in place (while PostgreSQL starts, say): what had
        # started was stopped on the way out; say so instead of click's bare "Aborted!".
        click.echo("colmena dev: interrupted, stopped", err=True)
        sys.exit(EXIT_INTERRUPTED)


COMMANDS = [migrate_command, ingress_command, worker_command, scheduler_command, dev_command]
