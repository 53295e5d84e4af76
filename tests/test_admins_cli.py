"""`colmena admins add | list | disable` as an operator runs them, on a real database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
from argon2 import PasswordHasher
from click.testing import CliRunner, Result

from colmena.cli import cli
from colmena.config import Settings
from colmena.domain.console_sessions import opened_at
from colmena.store import console_sessions
from tests.accounts_support import COST

PASSWORD = "a long admin password"


def _env(settings: Settings) -> dict[str, str]:
    env = {
        "COLMENA_DATABASE_URL": settings.require_database_url(),
        "COLMENA_DATA_DIR": str(settings.data_dir),
    }
    return env | {f"COLMENA_{key.upper()}": str(value) for key, value in COST.items()}


async def run(settings: Settings, args: list[str], stdin: str | None = None) -> Result:
    """The CLI runs its own event loop, so it goes to a thread."""
    return await asyncio.to_thread(
        CliRunner().invoke, cli, args, input=stdin, env=_env(settings), catch_exceptions=False
    )


async def admin_rows(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM console_admins ORDER BY name")


async def test_add_from_stdin_stores_an_argon2id_hash_at_the_configured_cost(settings, db) -> None:
    result = await run(settings, ["admins", "add", "ana", "--password-stdin"], PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert "admin ana added" in result.output and PASSWORD not in result.output
    [row] = await admin_rows(db)
    assert row["name"] == "ana" and row["disabled_at"] is None
    stored = row["password_hash"]
    assert stored.startswith("$argon2id$") and "m=8192,t=1,p=1" in stored
    assert PasswordHasher().verify(stored, PASSWORD)
    [audit] = await db.fetch(
        "SELECT actor, action, subject_kind, subject_id, cause FROM audit_events "
        "WHERE action = 'console.admin_add'"
    )
    assert audit["actor"].startswith("operator:cli:")
    assert (audit["subject_kind"], audit["subject_id"], audit["cause"]) == (
        "console_admin",
        "ana",
        "cli:admins add",
    )


async def test_add_asks_twice_without_echo_and_refuses_a_mismatch(settings, db) -> None:
    ok = await run(settings, ["admins", "add", "eva"], f"{PASSWORD}\n{PASSWORD}\n")
    assert ok.exit_code == 0, ok.output
    assert PASSWORD not in ok.output and "Repeat the password" in ok.output
    mismatch = await run(settings, ["admins", "add", "bob"], f"{PASSWORD}\nsomething else\n")
    assert mismatch.exit_code == 1  # click asks again; with no more input it aborts
    assert [row["name"] for row in await admin_rows(db)] == ["eva"]


async def test_add_refuses_bad_names_short_passwords_and_a_taken_name(settings, db) -> None:
    bad_name = await run(settings, ["admins", "add", "Ana Smith", "--password-stdin"], PASSWORD)
    assert bad_name.exit_code == 2 and "lower-case" in bad_name.output
    short = await run(settings, ["admins", "add", "ana", "--password-stdin"], "short\n")
    assert short.exit_code == 1 and "12 to 128 characters" in short.output
    assert await admin_rows(db) == []
    await run(settings, ["admins", "add", "ana", "--password-stdin"], PASSWORD + "\n")
    taken = await run(settings, ["admins", "add", "ana", "--password-stdin"], PASSWORD + "\n")
    assert taken.exit_code == 1 and "already exists" in taken.output


async def test_list_shows_every_admin_and_who_is_disabled(settings, db) -> None:
    empty = await run(settings, ["admins", "list"])
    assert empty.exit_code == 0 and "no admins" in empty.output
    for name in ("ana", "eva"):
        await run(settings, ["admins", "add", name, "--password-stdin"], PASSWORD + "\n")
    await run(settings, ["admins", "disable", "eva"])
    listed = await run(settings, ["admins", "list"])
    lines = listed.output.splitlines()
    assert lines[0].split() == ["NAME", "CREATED", "DISABLED"]
    ana, eva = lines[1], lines[2]
    assert ana.startswith("ana ") and ana.rstrip().endswith("-")
    assert eva.startswith("eva ") and not eva.rstrip().endswith("-")
    assert "$argon2id$" not in listed.output


async def test_disable_ends_the_admins_sessions_at_once(settings, db) -> None:
    await run(settings, ["admins", "add", "ana", "--password-stdin"], PASSWORD + "\n")
    await console_sessions.open_session(
        db,
        b"\x01" * 32,
        kind="admin",
        csrf_token="c" * 43,
        times=opened_at(datetime.now(UTC), 3600),
        admin_name="ana",
    )
    result = await run(settings, ["admins", "disable", "ana"])
    assert result.exit_code == 0, result.output
    assert await db.fetchval("SELECT count(*) FROM console_sessions") == 0
    assert (await admin_rows(db))[0]["disabled_at"] is not None
    again = await run(settings, ["admins", "disable", "ana"])
    assert again.exit_code == 1 and "no active admin" in again.output
    actions = await db.fetch(
        "SELECT action FROM audit_events WHERE subject_kind = 'console_admin' ORDER BY id"
    )
    assert [row["action"] for row in actions] == ["console.admin_add", "console.admin_disable"]
