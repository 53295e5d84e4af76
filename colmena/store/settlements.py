"""The end of settling one inbox event, written in one statement.

Settling decides in Python (`colmena.domain.payment_state`) on the rows it locked, then writes:
the payment events (one per status the event reported), at most one status change, the
follow-up messages and the inbox row's outcome. Those writes need nothing back from one another,
so they go to PostgreSQL together: data-modifying CTEs of one statement, one round trip in the
transaction that holds the locks (DESIGN.md rule 4: the follow-ups commit with the change that
decided them).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from colmena.store.outbox import OutboxDraft, OutboxMessage, message_from_row


@dataclass(frozen=True)
class PaymentEventRow:
    """One status a provider reported for a payment, applied or not, and why not."""

    payment_id: int
    source: str
    status: str
    provider_at: datetime
    applied: bool
    reason: str | None


@dataclass(frozen=True)
class StatusChange:
    payment_id: int
    status: str
    provider_at: datetime


_FINISH = """
WITH processed AS (
    UPDATE inbox SET processed_at = now(), outcome = $2 WHERE id = $1
), reported AS (
    INSERT INTO payment_events
        (payment_id, inbox_id, source, status, provider_at, applied, reason)
    SELECT payment_id, $1, source, status, provider_at, applied, reason
    FROM unnest($3::bigint[], $4::text[], $5::text[], $6::timestamptz[], $7::boolean[],
                $8::text[]) AS e(payment_id, source, status, provider_at, applied, reason)
), settled AS (
    UPDATE payments SET status = $10, status_at = $11, updated_at = now(),
        approved_at = CASE WHEN $10 = 'approved' AND approved_at IS NULL THEN now()
                           ELSE approved_at END
    WHERE id = $9
), messages AS (
    INSERT INTO outbox (message_id, queue, actor, args, kwargs, dedupe_key)
    SELECT message_id, queue, actor, args::jsonb, kwargs::jsonb, dedupe_key
    FROM unnest($12::uuid[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[])
        AS m(message_id, queue, actor, args, kwargs, dedupe_key)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id, message_id, queue, actor, args, kwargs
)
SELECT * FROM messages
"""


async def finish(
    conn: asyncpg.Connection,
    *,
    inbox_id: int | None,
    outcome: str,
    events: Sequence[PaymentEventRow],
    change: StatusChange | None,
    messages: Sequence[OutboxDraft],
) -> list[OutboxMessage]:
    """Write what settling decided; returns the messages recorded now (a dedupe key recorded
    before writes none). `inbox_id` None: an update applied without an inbox event."""
    rows = await conn.fetch(
        _FINISH,
        inbox_id,
        outcome,
        [event.payment_id for event in events],
        [event.source for event in events],
        [event.status for event in events],
        [event.provider_at for event in events],
        [event.applied for event in events],
        [event.reason for event in events],
        change.payment_id if change else None,
        change.status if change else None,
        change.provider_at if change else None,
        [uuid.uuid4() for _ in messages],
        [message.queue for message in messages],
        [message.actor for message in messages],
        # JSON text, cast in SQL: a list of lists would be taken for a two-dimensional array.
        [json.dumps(message.args) for message in messages],
        [json.dumps(message.kwargs) for message in messages],
        [message.dedupe_key for message in messages],
    )
    return [message_from_row(row) for row in rows]
