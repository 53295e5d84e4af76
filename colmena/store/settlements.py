"""Settling one inbox event, written in one statement.

Settling decides in Python (`colmena.domain.payment_state`) on the rows it locked, then writes:
the payment events (one per status the event reported), at most one status change, the
follow-up messages and the inbox row's outcome. Those writes need nothing back from one another,
so they go to PostgreSQL together: data-modifying CTEs of one statement, one round trip in the
transaction that holds the locks (`finish`; DESIGN.md rule 4: the follow-ups commit with the
change that decided them).

A payment's first event needs no lock held while Python decides: the payment does not exist
yet, so the state machine's answer is known (any status but `new` applies) and so are the
follow-ups. `create_settled` then writes it all in one statement of its own transaction, and
writes nothing when the event was taken or the payment exists by then: the caller then settles
the locked way.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from colmena.store.outbox import OutboxDraft, OutboxMessage, message_from_row
from colmena.store.payments import Payment, payment_from, qualified_columns


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


def _message_arrays(messages: Sequence[OutboxDraft]) -> list[list[Any]]:
    """The outbox rows as the columns `unnest` takes."""
    return [
        [uuid.uuid4() for _ in messages],
        [message.queue for message in messages],
        [message.actor for message in messages],
        # JSON text, cast in SQL: a list of lists would be taken for a two-dimensional array.
        [json.dumps(message.args) for message in messages],
        [json.dumps(message.kwargs) for message in messages],
        [message.dedupe_key for message in messages],
    ]


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
        *_message_arrays(messages),
    )
    return [message_from_row(row) for row in rows]


# The event is locked only if it is still unprocessed (a delivery that settled it first leaves
# nothing to lock, once it commits) and, for an event its message carried, only if the stored
# digest is the carried document's; the payment is created only if no row has its provider id
# (an inserter of the same payment is waited for); everything else is written only if both
# happened. The payment's audit rows are its creation and its first status (migration 0026).
_CREATE_SETTLED = f"""
WITH event AS (
    SELECT id FROM inbox
    WHERE id = $1 AND processed_at IS NULL
        AND ($23::bytea IS NULL OR document_sha256 = $23)
    FOR UPDATE
), created AS (
    INSERT INTO payments AS p (id, provider, provider_payment_id, amount_minor, currency,
        customer_email, customer_locale, tenant_ref, product_ref, product_kind, metadata,
        status, status_at, approved_at)
    SELECT $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
        CASE WHEN $13 = 'approved' THEN now() END
    FROM event
    ON CONFLICT (provider, provider_payment_id) DO NOTHING
    RETURNING {qualified_columns("p")}
), processed AS (
    UPDATE inbox SET processed_at = now(), outcome = $15
    WHERE id = $1 AND EXISTS (SELECT FROM created)
), reported AS (
    INSERT INTO payment_events
        (payment_id, inbox_id, source, status, provider_at, applied, reason)
    SELECT id, $1, $16, status, status_at, true, NULL FROM created
), messages AS (
    INSERT INTO outbox (message_id, queue, actor, args, kwargs, dedupe_key)
    SELECT message_id, queue, actor, args::jsonb, kwargs::jsonb, dedupe_key
    FROM unnest($17::uuid[], $18::text[], $19::text[], $20::text[], $21::text[], $22::text[])
        AS m(message_id, queue, actor, args, kwargs, dedupe_key)
    WHERE EXISTS (SELECT FROM created)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id, message_id, queue, actor, args, kwargs
)
SELECT c.*, m.id AS outbox_id, m.message_id, m.queue, m.actor, m.args, m.kwargs
FROM created c LEFT JOIN messages m ON true
"""


async def create_settled(
    conn: asyncpg.Connection,
    *,
    inbox_id: int,
    payment: Payment,
    source: str,
    outcome: str,
    messages: Sequence[OutboxDraft],
    document_sha256: bytes | None = None,
) -> tuple[Payment, list[OutboxMessage]] | None:
    """Create ``payment`` (its id drawn with its event: `inbox.load_drawing_payment_id`, or the
    ingress for a carried event) in its status, as the inbox event ``inbox_id`` reported it from
    ``source``, with its follow-ups, and mark the event processed, in one statement outside any
    transaction block; returns the payment as written and the messages recorded. None, with
    nothing written, when the event is processed, the payment exists by the time the statement
    runs, or ``document_sha256`` (the digest of the document a message carried, decided on
    unread) is not the stored event's."""
    rows = await conn.fetch(
        _CREATE_SETTLED,
        inbox_id,
        payment.id,
        payment.provider,
        payment.provider_payment_id,
        payment.amount_minor,
        payment.currency,
        payment.customer_email,
        payment.customer_locale,
        payment.tenant_ref,
        payment.product_ref,
        payment.product_kind,
        payment.metadata,
        payment.status,
        payment.status_at,
        outcome,
        source,
        *_message_arrays(messages),
        document_sha256,
    )
    if not rows:
        return None
    recorded = [
        message_from_row({**dict(row), "id": row["outbox_id"]})
        for row in rows
        if row["outbox_id"] is not None
    ]
    return payment_from(rows[0]), recorded
