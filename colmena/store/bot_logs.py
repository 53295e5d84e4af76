"""Queries on bots' shipped log lines and on where shipping stopped for each tenant.

The supervisor side appends lines and moves the cursor in one transaction (under the cursor's
row lock, so two shippers never number the same lines); the ingress only reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class LogLine:
    seq: int
    logged_at: datetime
    line: str


@dataclass(frozen=True)
class ShipCursor:
    """The tenant's last shipped seq and where in which bot's log shipping stopped."""

    last_seq: int
    bot_id: str | None
    position: int
    skip: int


async def lock_cursor(conn: asyncpg.Connection, tenant_id: str) -> ShipCursor:
    """The tenant's cursor (created at zero), locked until the caller's transaction ends."""
    await conn.execute(
        "INSERT INTO bot_log_cursors (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING",
        tenant_id,
    )
    row = await conn.fetchrow(
        "SELECT last_seq, bot_id, position, skip FROM bot_log_cursors WHERE tenant_id = $1 "
        "FOR UPDATE",
        tenant_id,
    )
    return ShipCursor(**dict(row))


async def save_cursor(conn: asyncpg.Connection, tenant_id: str, cursor: ShipCursor) -> None:
    await conn.execute(
        """
        UPDATE bot_log_cursors
        SET last_seq = $2, bot_id = $3, position = $4, skip = $5, shipped_at = now()
        WHERE tenant_id = $1
        """,
        tenant_id,
        cursor.last_seq,
        cursor.bot_id,
        cursor.position,
        cursor.skip,
    )


async def append(
    conn: asyncpg.Connection,
    tenant_id: str,
    first_seq: int,
    lines: Sequence[tuple[datetime, str]],
) -> None:
    """Insert `lines` numbered from `first_seq`, in one statement."""
    if not lines:
        return
    await conn.execute(
        """
        INSERT INTO bot_logs (tenant_id, seq, logged_at, line)
        SELECT $1, $2::bigint + l.ord - 1, l.logged_at, l.line
        FROM unnest($3::timestamptz[], $4::text[]) WITH ORDINALITY AS l (logged_at, line, ord)
        """,
        tenant_id,
        first_seq,
        [logged_at for logged_at, _ in lines],
        [line for _, line in lines],
    )


async def keep_newest(conn: asyncpg.Connection, tenant_id: str, last_seq: int, keep: int) -> int:
    """Delete the tenant's lines older than the newest `keep`; returns how many went."""
    done = await conn.execute(
        "DELETE FROM bot_logs WHERE tenant_id = $1 AND seq <= $2", tenant_id, last_seq - keep
    )
    return int(done.split()[-1])


async def delete_expired(conn: asyncpg.Connection) -> int:
    """Delete every line older than its tenant's plan keeps logs; returns how many went."""
    done = await conn.execute(
        """
        DELETE FROM bot_logs l
        USING tenants t JOIN plans p ON p.name = t.plan
        WHERE l.tenant_id = t.id
          AND l.logged_at < now() - make_interval(days => p.log_retention_days)
        """
    )
    return int(done.split()[-1])


async def newest(conn: asyncpg.Connection, tenant_id: str, count: int) -> list[LogLine]:
    """The tenant's last `count` lines, oldest first."""
    rows = await conn.fetch(
        """
        SELECT seq, logged_at, line FROM (
            SELECT seq, logged_at, line FROM bot_logs WHERE tenant_id = $1
            ORDER BY seq DESC LIMIT $2
        ) AS last ORDER BY seq
        """,
        tenant_id,
        count,
    )
    return [LogLine(**dict(row)) for row in rows]


async def after(conn: asyncpg.Connection, tenant_id: str, seq: int, limit: int) -> list[LogLine]:
    """Up to `limit` of the tenant's lines after `seq`, oldest first."""
    rows = await conn.fetch(
        "SELECT seq, logged_at, line FROM bot_logs WHERE tenant_id = $1 AND seq > $2 "
        "ORDER BY seq LIMIT $3",
        tenant_id,
        seq,
        limit,
    )
    return [LogLine(**dict(row)) for row in rows]


async def last_seq(conn: asyncpg.Connection, tenant_id: str) -> int | None:
    """The seq of the tenant's newest stored line; None when it has none."""
    value: int | None = await conn.fetchval(
        "SELECT max(seq) FROM bot_logs WHERE tenant_id = $1", tenant_id
    )
    return value
