"""Read-only queries for `colmena status`, through each domain's own query module.

Each checks its table with to_regclass first, so status keeps working on a database migrated
before that domain's migration existed (None means "not installed", not "none").
"""

from __future__ import annotations

import asyncpg

from colmena.store import rates, tenants


async def table_exists(conn: asyncpg.Connection, name: str) -> bool:
    return await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name)


async def last_rates(conn: asyncpg.Connection) -> tuple[list[rates.RateRow], set[str]] | None:
    """The newest published rate per source and pair, and the sources marked stale."""
    if not await table_exists(conn, "rates"):
        return None
    latest = await rates.latest_published_all(conn)
    stale = {source.source for source in await rates.sources(conn) if source.stale}
    return latest, stale


async def bots_by_state(conn: asyncpg.Connection) -> dict[str, int] | None:
    """Bots per state, counted exactly as the colmena_bots gauge counts them."""
    if not await table_exists(conn, "bots"):
        return None
    return dict(sorted((await tenants.state_counts(conn)).items()))
