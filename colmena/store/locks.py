"""PostgreSQL advisory locks: the one way colmena serialises work across processes.

Every lock is a pair (space, key): the space is a four-letter tag packed into an int (one per
kind of work, so kinds never collide), the key an int id or a text hashed by PostgreSQL's
`hashtext`. Session locks are always released in `finally`, so a pooled connection never goes
back to the pool holding one (the pool skips its reset query on that promise); the one exception
is `try_keeping`, for a connection of its own that holds its locks while it lives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


def lock_space(tag: str) -> int:
    """A lock space from a four-letter ASCII tag ("LICM"), as a signed 32-bit int."""
    raw = tag.encode("ascii")
    if len(raw) != 4:
        raise ValueError(f"a lock space tag has 4 ASCII letters, not {tag!r}")
    return int.from_bytes(raw, "big", signed=True)


def _key_sql(key: int | str) -> str:
    return "hashtext($2)" if isinstance(key, str) else "$2::int"


@asynccontextmanager
async def advisory_lock(
    conn: asyncpg.Connection, space: int, key: int | str
) -> AsyncIterator[None]:
    """Hold the session lock (space, key) for the block; wait while another session has it."""
    await conn.execute(f"SELECT pg_advisory_lock($1, {_key_sql(key)})", space, key)
    try:
        yield
    finally:
        await conn.execute(f"SELECT pg_advisory_unlock($1, {_key_sql(key)})", space, key)


@asynccontextmanager
async def try_advisory_lock(
    conn: asyncpg.Connection, space: int, key: int | str
) -> AsyncIterator[bool]:
    """Take (space, key) if it is free; the block learns whether it got it. Never waits."""
    got = bool(await conn.fetchval(f"SELECT pg_try_advisory_lock($1, {_key_sql(key)})", space, key))
    try:
        yield got
    finally:
        if got:
            await conn.execute(f"SELECT pg_advisory_unlock($1, {_key_sql(key)})", space, key)


async def try_keeping(conn: asyncpg.Connection, space: int, key: int | str) -> bool:
    """Take (space, key) if it is free and keep it until the session ends; never waits. Only
    for a connection of its own, never a pooled one."""
    return bool(
        await conn.fetchval(f"SELECT pg_try_advisory_lock($1, {_key_sql(key)})", space, key)
    )
