"""Migrations on a real PostgreSQL: fresh, repeated, concurrent, and the un-migrated refusal."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from colmena.store.migrate import (
    SchemaNotMigrated,
    apply_migrations,
    available_migrations,
    ensure_migrated,
)
from tests.conftest import wait_for


async def test_fresh_database_gets_every_migration_then_nothing(empty_database_url: str) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        expected = [migration.name for migration in available_migrations()]
        assert await apply_migrations(conn) == expected
        assert await apply_migrations(conn) == []
        recorded = await conn.fetch("SELECT version FROM colmena_migrations ORDER BY version")
        assert [row["version"] for row in recorded] == [m.version for m in available_migrations()]
        await ensure_migrated(conn)
    finally:
        await conn.close()


async def test_two_concurrent_runs_apply_each_migration_once(empty_database_url: str) -> None:
    first, second = (
        await asyncpg.connect(empty_database_url),
        await asyncpg.connect(empty_database_url),
    )
    try:
        applied_a, applied_b = await asyncio.gather(
            apply_migrations(first), apply_migrations(second)
        )
        expected = [migration.name for migration in available_migrations()]
        assert sorted(applied_a + applied_b) == sorted(expected)
        assert not (set(applied_a) & set(applied_b))
        assert await first.fetchval("SELECT count(*) FROM colmena_migrations") == len(expected)
    finally:
        await first.close()
        await second.close()


async def test_unmigrated_schema_is_refused_with_instructions(empty_database_url: str) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        with pytest.raises(SchemaNotMigrated, match="colmena migrate"):
            await ensure_migrated(conn)
    finally:
        await conn.close()


async def test_checking_the_schema_reads_the_applied_versions_once(database_url: str) -> None:
    """Every process checks the schema as it starts: two statements, however many migrations."""
    conn = await asyncpg.connect(database_url)
    sent: list[str] = []
    conn.add_query_logger(lambda query: sent.append(query.query))
    try:
        await ensure_migrated(conn)
        await conn.fetchval("SELECT 1")  # the logger is called soon after; this comes after it

        async def logged() -> bool:
            return sent[-1:] == ["SELECT 1"]

        await wait_for(logged, timeout=5)
    finally:
        await conn.close()
    assert len(available_migrations()) > 2
    assert len(sent) == 3, sent
