"""The `colmena` command: processes for operators, and tools for payments, tenants, dead letters...

Failures an operator can fix (bad settings, unreachable or un-migrated database) print one line
and exit 2; a traceback is only for bugs.

A command's module is imported only when that command runs (`COMMAND_MODULES` says which
module holds it), as `colmena.actors` imports actor modules: importing every module cost about
2 s of CPU on a 2-core machine before any command started, paid by each `colmena worker`, each
one-line operator command and each of the processes the tests start. `colmena --help` still
imports them all, for their help lines.
"""

from __future__ import annotations

import importlib
import sys

import click

from colmena.config import SettingsError
from colmena.errors import StartupError

EXIT_CONFIG = 2

# Command name -> the module of colmena.cli whose COMMANDS list holds it.
COMMAND_MODULES: dict[str, str] = {
    "migrate": "core",
    "worker": "core",
    "scheduler": "core",
    "ingress": "serving",
    "dev": "serving",
    "check": "check",
    "trigger": "payments",
    "payments": "payments",
    "reconcile": "reconcile",
    "dlq": "deadletters",
    "rates": "rates",
    "license": "licenses",
    "invoices": "invoices",
    "status": "status",
    "tenants": "tenants",
    "keys": "tenants",
    "bots": "tenants",
    "catalog": "catalog",
    "admins": "admins",
    "audit": "audit",
    "db": "db",
    "report": "reports",
    "backup": "backups",
    "restore": "backups",
    "backups": "backups",
    "health-report": "health_report",
    "notifications": "notifications",
}


def load_command(name: str) -> click.Command | None:
    """The command called `name`, its module imported now; None for an unknown name."""
    module_name = COMMAND_MODULES.get(name)
    if module_name is None:
        return None
    module = importlib.import_module(f"colmena.cli.{module_name}")
    commands: list[click.Command] = module.COMMANDS
    return next(command for command in commands if command.name == name)


class _Cli(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name)

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


def main() -> None:
    cli(prog_name="colmena")
