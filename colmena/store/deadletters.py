"""Reasons for dead-lettered messages, keyed by message id, for `colmena dlq`."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg


async def record_dead_letter(
    pool: asyncpg.Pool, *, message_id: str, actor: str, error: str
) -> None:
    await pool.execute(
        """
        INSERT INTO dead_letter_reasons (message_id, actor, error) VALUES ($1, $2, $3)
        ON CONFLICT (message_id) DO UPDATE SET error = EXCLUDED.error, recorded_at = now()
        """,
        message_id,
        actor,
        error[:2000],
    )


async def reasons(conn: asyncpg.Connection, message_ids: Sequence[str]) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT message_id, error FROM dead_letter_reasons WHERE message_id = ANY($1::text[])",
        list(message_ids),
    )
    return {row["message_id"]: row["error"] for row in rows}
