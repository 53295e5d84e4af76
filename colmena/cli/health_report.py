"""`colmena health-report`: print the daily health report, or send it now."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, date, datetime

import click

from colmena.actors.health_report import gather, send_report
from colmena.config import Settings
from colmena.config.dev_stack import load_operator_settings
from colmena.config.logging import configure_logging
from colmena.domain.backup_retention import report_day
from colmena.domain.health_report import render
from colmena.errors import ColmenaError
from colmena.gateways.mailer import close_mailer, mailer_for
from colmena.runtime.startup import open_database
from colmena.store.migrate import SchemaNotMigrated, ensure_migrated

EXIT_FAILED = 2


async def _report(settings: Settings, day: date, send: bool) -> str:
    conn = await open_database(settings.require_database_url())
    try:
        await ensure_migrated(conn)
        if not send:
            return render(await gather(settings, conn, day)).text
        mailer = mailer_for(settings)
        try:
            message_id = await send_report(settings, conn, mailer, day, again=True)
        finally:
            await close_mailer(mailer)
        return f"sent the report of {day.isoformat()} to {settings.health_report_to} ({message_id})"
    finally:
        await conn.close()


@click.command("health-report")
@click.option("--send", is_flag=True, help="email it to COLMENA_HEALTH_REPORT_TO now")
@click.option(
    "--day",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="the local day it covers (default: the one the next daily report covers)",
)
def health_report_command(send: bool, day: datetime | None) -> None:
    """The daily health report: the day's payments, licenses and invoices, dead letters, outbox,
    rates, bots, CSD expiry and the last backup. Printed, or sent with --send."""
    configure_logging(dev=True, level="WARNING")
    settings = load_operator_settings()
    chosen = (
        day.date()
        if day is not None
        else report_day(
            datetime.now(UTC), settings.health_report_local_hour, settings.operator_zone()
        )
    )
    try:
        output = asyncio.run(_report(settings, chosen, send))
    except (ColmenaError, SchemaNotMigrated) as exc:
        click.echo(f"colmena: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(output, nl=not output.endswith("\n"))


COMMANDS = [health_report_command]
