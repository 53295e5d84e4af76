"""`colmena db`: the database roles colmena runs as.

`colmena migrate` runs as the role that owns the schema; the processes (ingress, workers,
scheduler) should connect as a runtime role that owns nothing. `grant-runtime ROLE` gives that
role what colmena needs and no more: reading and writing the ordinary tables, but only reading
and appending the audit trail, whose rows therefore cannot be changed or deleted by colmena.
"""

from __future__ import annotations

import asyncpg
import click

from colmena.cli.database import with_database
from colmena.config.dev_stack import load_operator_settings
from colmena.store import roles


@click.group("db")
def db_group() -> None:
    """Database roles: the restricted role colmena's processes run as."""


@db_group.command("grant-runtime")
@click.argument("role")
def grant_runtime_command(role: str) -> None:
    """Grant ROLE what colmena's processes need (run as the owner that runs `migrate`).

    ROLE may read and write every table except the audit trail, which it may only read and
    append to; tables of later migrations follow. Then point the processes'
    COLMENA_DATABASE_URL at ROLE, and keep the owner's URL for `colmena migrate`."""

    async def work(conn: asyncpg.Connection) -> tuple[roles.RuntimeGrant, dict[str, list[str]]]:
        granted = await roles.grant_runtime(conn, role)
        shown = {
            table: await roles.table_privileges(conn, role, table)
            for table in ("payments", *roles.APPEND_ONLY_TABLES)
        }
        return granted, shown

    try:
        granted, shown = with_database(load_operator_settings(), work)
    except roles.RoleRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"granted {granted.role} the runtime privileges on {granted.tables} table(s) owned by"
        f" {granted.owner}; tables {granted.owner} creates later follow"
    )
    for table, privileges in shown.items():
        click.echo(f"  {table}: {', '.join(privileges) or 'none'}")


COMMANDS = [db_group]
