"""Serving commands: the ingress, and `colmena dev` (everything in one process)."""

from __future__ import annotations

import asyncio
import sys

import click

from colmena.config import load_settings
from colmena.dev import run_dev
from colmena.http.server import run_ingress

EXIT_INTERRUPTED = 130


@click.command("ingress")
def ingress_command() -> None:
    """Serve webhooks and the tenant API on COLMENA_HTTP_HOST:COLMENA_HTTP_PORT."""
    run_ingress(load_settings())


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


COMMANDS = [ingress_command, dev_command]
