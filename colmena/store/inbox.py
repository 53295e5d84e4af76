"""The inbox: every verified event that arrived, once per (provider, event key)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True)
class InboxEvent:
    id: int
    provider: str
    event_key: str
    kind: str
    payload: dict[str, Any]
    processed: bool


async def record_event(
    conn: asyncpg.Connection, *, provider: str, event_key: str, kind: str, payload: dict[str, Any]
) -> tuple[int, bool]:
    """Insert the event unless it is known; returns (inbox id, whether it is new).

    Concurrent duplicates are settled by the unique key: exactly one insert wins, the others read
    the winner's id, so five simultaneous deliveries produce one row and one message.
    """
    row = await conn.fetchrow(
        """
        INSERT INTO inbox (provider, event_key, kind, payload) VALUES ($1, $2, $3, $4)
        ON CONFLICT (provider, event_key) DO NOTHING
        RETURNING id
        """,
        provider,
        event_key,
        kind,
        payload,
    )
    if row is not None:
        return row["id"], True
    existing = await conn.fetchval(
        "SELECT id FROM inbox WHERE provider = $1 AND event_key = $2", provider, event_key
    )
    return existing, False


async def load_for_processing(conn: asyncpg.Connection, inbox_id: int) -> InboxEvent | None:
    """Lock the event row for the caller's transaction, so two deliveries never apply it twice."""
    row = await conn.fetchrow(
        "SELECT id, provider, event_key, kind, payload, processed_at FROM inbox WHERE id = $1 FOR UPDATE",
        inbox_id,
    )
    if row is None:
        return None
    return InboxEvent(
        id=row["id"],
        provider=row["provider"],
        event_key=row["event_key"],
        kind=row["kind"],
        payload=row["payload"],
        processed=row["processed_at"] is not None,
    )


async def mark_processed(conn: asyncpg.Connection, inbox_id: int, outcome: str) -> None:
    await conn.execute(
        "UPDATE inbox SET processed_at = now(), outcome = $2 WHERE id = $1", inbox_id, outcome
    )
