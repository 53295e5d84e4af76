"""The `colmena` command: processes for operators, and tools for payments, tenants, dead letters...

Failures an operator can fix (bad settings, unreachable or un-migrated database) print one line
and exit 2; a traceback is only for bugs.
"""

from __future__ import annotations

import sys

import click

from colmena.cli import (
    admins,
    audit,
    backups,
    catalog,
    check,
    core,
    db,
    deadletters,
    health_report,
    invoices,
    licenses,
    notifications,
    payments,
    rates,
    reports,
    status,
    tenants,
)
from colmena.config import SettingsError
from colmena.errors import StartupError

EXIT_CONFIG = 2


class _Cli(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (SettingsError, StartupError) as exc:
            click.echo(f"colmena: {exc}", err=True)
            sys.exit(EXIT_CONFIG)


@click.group(cls=_Cli)
@click.version_option(package_name="colmena")
def cli() -> None:
    """colmena: verified webhooks and tenant commands in, exactly-once effects out."""


COMMAND_MODULES = [
    core,
    check,
    payments,
    deadletters,
    rates,
    licenses,
    invoices,
    status,
    tenants,
    catalog,
    admins,
    audit,
    db,
    reports,
    backups,
    health_report,
    notifications,
]
for module in COMMAND_MODULES:
    for command in module.COMMANDS:
        cli.add_command(command)


def main() -> None:
    cli(prog_name="colmena")
