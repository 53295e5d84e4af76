"""`colmena admins`: the console's operator accounts.

`add NAME` asks for the password twice without echoing it (or reads one line from stdin with
`--password-stdin`, for scripts) and stores only its argon2id hash, at the accounts' configured
cost (COLMENA_ACCOUNTS_ARGON2_*). The password policy is the accounts' (length bounds). Once an
active admin exists the console's admin form asks for a name and password, and the admin token
no longer signs anyone in there. `disable NAME` keeps the row (audit rows name it) and ends the
admin's console sessions at once. Each change is an audit row of the operator who ran it.
"""

from __future__ import annotations

import sys

import asyncpg
import click

from colmena.cli.audit import record_operator_action
from colmena.cli.database import with_database
from colmena.config import Settings
from colmena.config.dev_stack import load_operator_settings
from colmena.domain.accounts import HashCost, hasher
from colmena.domain.console_sessions import check_admin_name
from colmena.store import admins as store


def _name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return check_admin_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _password(settings: Settings, from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt(
            "Password", hide_input=True, confirmation_prompt="Repeat the password"
        )
    low, high = settings.accounts_password_min_length, settings.accounts_password_max_length
    if not low <= len(password) <= high:
        raise click.ClickException(f"the password must have {low} to {high} characters")
    return password


def _hash(settings: Settings, password: str) -> str:
    cost = HashCost(
        settings.accounts_argon2_time_cost,
        settings.accounts_argon2_memory_kib,
        settings.accounts_argon2_parallelism,
    )
    return hasher(cost).hash(password)


@click.group("admins")
def admins_group() -> None:
    """Operator accounts of the web console: add, list, disable."""


@admins_group.command("add")
@click.argument("name", callback=_name)
@click.option("--password-stdin", is_flag=True, help="read the password from stdin (one line)")
def add_command(name: str, password_stdin: bool) -> None:
    """Add a console admin NAME (the password is asked twice, never echoed)."""
    settings = load_operator_settings()
    password_hash = _hash(settings, _password(settings, password_stdin))

    async def work(conn: asyncpg.Connection) -> bool:
        async with conn.transaction():
            created = await store.create_admin(conn, name=name, password_hash=password_hash)
            if created:
                await record_operator_action(
                    conn,
                    "admins add",
                    action="console.admin_add",
                    subject_kind="console_admin",
                    subject_id=name,
                )
            return created

    if not with_database(settings, work):
        raise click.ClickException(f"an admin named {name} already exists")
    click.echo(f"admin {name} added: sign in at /console/login")


@admins_group.command("list")
def list_command() -> None:
    """Every admin: name, created, disabled."""
    admins = with_database(load_operator_settings(), store.list_admins)
    if not admins:
        click.echo("no admins (the console takes COLMENA_BOT_ADMIN_TOKEN until one exists)")
        return
    click.echo(f"{'NAME':<24} {'CREATED':<20} DISABLED")
    for admin in admins:
        disabled = f"{admin.disabled_at:%Y-%m-%d %H:%M:%S}" if admin.disabled_at else "-"
        click.echo(f"{admin.name:<24} {admin.created_at:%Y-%m-%d %H:%M:%S}  {disabled}")


@admins_group.command("disable")
@click.argument("name", callback=_name)
def disable_command(name: str) -> None:
    """Disable admin NAME and end its console sessions."""

    async def work(conn: asyncpg.Connection) -> bool:
        async with conn.transaction():
            disabled = await store.disable_admin(conn, name)
            if disabled:
                await record_operator_action(
                    conn,
                    "admins disable",
                    action="console.admin_disable",
                    subject_kind="console_admin",
                    subject_id=name,
                )
            return disabled

    if not with_database(load_operator_settings(), work):
        raise click.ClickException(f"no active admin named {name}")
    click.echo(f"admin {name} disabled; their console sessions ended")


COMMANDS = [admins_group]
