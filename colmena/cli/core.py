"""Process commands: migrate, worker, scheduler (the ingress and `colmena dev` are in
`colmena.cli.serving`, which loads the web application)."""

from __future__ import annotations

import asyncio

import click

from colmena.actors import all_jobs
from colmena.config import load_settings
from colmena.runtime.queues import DOMAIN_QUEUES
from colmena.runtime.startup import migrate, run_scheduler, run_worker


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


COMMANDS = [migrate_command, worker_command, scheduler_command]
