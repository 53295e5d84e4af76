"""The inbox: every verified event that arrived, once per (provider, event key)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from colmena.store.outbox import OutboxMessage, message_from_row


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


async def record_with_message(
    conn: asyncpg.Connection,
    *,
    provider: str,
    event_key: str,
    kind: str,
    payload: dict[str, Any],
    queue: str,
    actor: str,
) -> tuple[bool, OutboxMessage | None]:
    """Record a new event and the outbox message that will process it, in one statement.

    One round trip instead of a transaction's four: this is the ingress hot path. A duplicate
    inserts nothing at all and returns (False, None).
    """
    row = await conn.fetchrow(
        """
        WITH new_event AS (
            INSERT INTO inbox (provider, event_key, kind, payload) VALUES ($1, $2, $3, $4)
            ON CONFLICT (provider, event_key) DO NOTHING
            RETURNING id
        ), message AS (
            INSERT INTO outbox (message_id, queue, actor, args, dedupe_key)
            SELECT $5, $6, $7, jsonb_build_array(id), 'inbox:' || id FROM new_event
            RETURNING id, message_id, queue, actor, args, kwargs
        )
        SELECT message.* FROM (SELECT 1) AS one LEFT JOIN message ON true
        """,
        provider,
        event_key,
        kind,
        payload,
        uuid.uuid4(),
        queue,
        actor,
    )
    if row["id"] is None:
        return False, None
    return True, message_from_row(row)


_SELECT = "SELECT id, provider, event_key, kind, payload, processed_at FROM inbox WHERE id = $1"


async def load(conn: asyncpg.Connection, inbox_id: int) -> InboxEvent | None:
    """Read the event without locking (to decide whether remote calls are needed at all)."""
    return _event(await conn.fetchrow(_SELECT, inbox_id))


async def load_for_processing(conn: asyncpg.Connection, inbox_id: int) -> InboxEvent | None:
    """Lock the event row for the caller's transaction, so two deliveries never apply it twice."""
    return _event(await conn.fetchrow(_SELECT + " FOR UPDATE", inbox_id))


def _event(row: asyncpg.Record | None) -> InboxEvent | None:
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
