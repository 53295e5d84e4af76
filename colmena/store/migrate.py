"""Numbered SQL migrations, applied in order, each in its own transaction, recorded in a table.

A session-level advisory lock serialises concurrent runs (two containers starting at once): the
second waits, then finds nothing left to apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from colmena.store.locks import advisory_lock, lock_space

MIGRATION_LOCK_SPACE = lock_space("MIGR")
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


class SchemaNotMigrated(Exception):
    """The database lags behind the code; the message tells the operator what to run."""


def available_migrations() -> list[Migration]:
    """The migrations shipped in the package, sorted by version."""
    folder = resources.files("colmena.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(
                Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8"))
            )
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version number: {versions}")
    return found


async def _applied_versions(conn: asyncpg.Connection) -> set[int]:
    exists = await conn.fetchval("SELECT to_regclass('colmena_migrations') IS NOT NULL")
    if not exists:
        return set()
    return {row["version"] for row in await conn.fetch("SELECT version FROM colmena_migrations")}


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply what is missing; returns the names applied (empty when up to date)."""
    async with advisory_lock(conn, MIGRATION_LOCK_SPACE, 0):
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS colmena_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        applied = await _applied_versions(conn)
        done = []
        for migration in available_migrations():
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO colmena_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            done.append(migration.name)
        return done


async def ensure_migrated(conn: asyncpg.Connection) -> None:
    """Refuse to run code against a schema it was not written for."""
    applied = await _applied_versions(conn)
    missing = [m.name for m in available_migrations() if m.version not in applied]
    if missing:
        raise SchemaNotMigrated(
            f"the database schema is missing {len(missing)} migration(s) ({missing[0]}...): "
            "run `colmena migrate` first"
        )
