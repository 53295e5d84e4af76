"""The outbox: messages decided inside a transaction, published only after it commits.

Rows are written with the caller's connection so they commit or roll back with the state change
that decided them (DESIGN.md rule 4). Publishing is someone else's job (`colmena.runtime.outbox`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    message_id: str
    queue: str
    actor: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxDraft:
    """A message decided but not yet written: written with others in one statement
    (`colmena.store.settlements`), with a new message id, unless its dedupe key was recorded."""

    queue: str
    actor: str
    args: list[Any]
    dedupe_key: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def message_from_row(row: asyncpg.Record) -> OutboxMessage:
    return OutboxMessage(
        id=row["id"],
        message_id=str(row["message_id"]),
        queue=row["queue"],
        actor=row["actor"],
        args=list(row["args"]),
        kwargs=dict(row["kwargs"]),
    )


async def record(
    conn: asyncpg.Connection,
    *,
    queue: str,
    actor: str,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
) -> OutboxMessage | None:
    """Add a message to the caller's transaction; None when `dedupe_key` was already recorded."""
    row = await conn.fetchrow(
        """
        INSERT INTO outbox (message_id, queue, actor, args, kwargs, dedupe_key)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (dedupe_key) DO NOTHING
        RETURNING id, message_id, queue, actor, args, kwargs
        """,
        uuid.uuid4(),
        queue,
        actor,
        list(args),
        kwargs or {},
        dedupe_key,
    )
    return message_from_row(row) if row is not None else None


async def claim_and_mark(
    conn: asyncpg.Connection, *, older_than_s: float, limit: int
) -> list[OutboxMessage]:
    """Take up to `limit` unpublished rows older than the grace period and mark them published,
    in the caller's transaction, in one statement.

    The mark only counts once the caller commits, which the relay does after RabbitMQ confirmed
    the rows and `unmark` put back the ones it did not; a crash before that rolls it all back.
    Until then the rows stay locked and other relays skip them (SKIP LOCKED).
    """
    rows = await conn.fetch(
        """
        UPDATE outbox SET published_at = now(), publish_attempts = publish_attempts + 1
        WHERE id IN (
            SELECT id FROM outbox
            WHERE published_at IS NULL AND created_at < now() - make_interval(secs => $1)
            ORDER BY created_at
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        )
        RETURNING id, message_id, queue, actor, args, kwargs
        """,
        older_than_s,
        limit,
    )
    return [message_from_row(row) for row in rows]


async def unmark(conn: asyncpg.Connection, ids: Sequence[int], error: str) -> None:
    """Make rows `claim_and_mark` marked pending again (the broker did not confirm them)."""
    if ids:
        await conn.execute(
            "UPDATE outbox SET published_at = NULL, last_error = $2 WHERE id = ANY($1::bigint[])",
            list(ids),
            error[:500],
        )


async def mark_published(conn: asyncpg.Connection, ids: Sequence[int]) -> None:
    if ids:
        await conn.execute(
            "UPDATE outbox SET published_at = now(), publish_attempts = publish_attempts + 1 "
            "WHERE id = ANY($1::bigint[]) AND published_at IS NULL",
            list(ids),
        )


async def note_failures(conn: asyncpg.Connection, ids: Sequence[int], error: str) -> None:
    if ids:
        await conn.execute(
            "UPDATE outbox SET publish_attempts = publish_attempts + 1, last_error = $2 "
            "WHERE id = ANY($1::bigint[])",
            list(ids),
            error[:500],
        )


async def backlog(conn: asyncpg.Connection) -> tuple[int, float]:
    """(rows pending, age in seconds of the oldest), for metrics and `colmena status`."""
    row = await conn.fetchrow(
        "SELECT count(*) AS pending, "
        "coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest "
        "FROM outbox WHERE published_at IS NULL"
    )
    return row["pending"], row["oldest"]


async def mark_consumed(pool: asyncpg.Pool, message_id: str) -> None:
    """Note that an actor finished the row's message (only tracked by the in-process broker)."""
    await pool.execute(
        "UPDATE outbox SET consumed_at = now() WHERE message_id = $1::uuid", message_id
    )


async def requeue_unconsumed(conn: asyncpg.Connection) -> int:
    """Make every message not known to be consumed pending again (after an in-process restart)."""
    result = await conn.execute(
        "UPDATE outbox SET published_at = NULL "
        "WHERE consumed_at IS NULL AND published_at IS NOT NULL"
    )
    return int(result.split()[-1])
