"""Running one piece of async database work from a synchronous CLI command."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from colmena.config import Settings
from colmena.config.logging import configure_logging
from colmena.runtime.startup import check_database, open_database

T = TypeVar("T")


def with_database(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run `work` on one connection to a migrated database; a missing or stale one is one line."""
    configure_logging(dev=True, level="WARNING")  # the command's own lines are the output

    async def run() -> T:
        url = settings.require_database_url()
        await check_database(url)
        conn = await open_database(url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())
