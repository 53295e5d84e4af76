"""Every statement a pooled connection sends is counted: round trips per payment are measured
from `colmena_db_statements_total` (bench/capacity.py), so the count must be exact."""

from __future__ import annotations

from prometheus_client import REGISTRY

from colmena.store.pool import connect, create_pool


def statements_sent() -> float:
    return REGISTRY.get_sample_value("colmena_db_statements_total") or 0.0


async def test_each_statement_of_a_pooled_connection_is_counted(database_url) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            before = statements_sent()
            async with conn.transaction():  # BEGIN
                await conn.execute("CREATE TEMP TABLE counted (n int)")
                await conn.execute("INSERT INTO counted VALUES ($1)", 1)
                await conn.executemany("INSERT INTO counted VALUES ($1)", [(2,), (3,)])
                assert await conn.fetchval("SELECT count(*) FROM counted") == 3
                assert len(await conn.fetch("SELECT n FROM counted")) == 3
                assert (await conn.fetchrow("SELECT max(n) AS n FROM counted"))["n"] == 3
            # COMMIT: eight round trips in all.
            assert statements_sent() - before == 8
    finally:
        await pool.close()


async def test_a_single_connection_counts_too(database_url) -> None:
    conn = await connect(database_url)
    try:
        before = statements_sent()
        assert await conn.fetchval("SELECT 1") == 1
        assert statements_sent() - before == 1
    finally:
        await conn.close()
