"""The inbox: every verified event that arrived, once per (provider, event key)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import asyncpg

from colmena.store.outbox import OutboxMessage


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


class ArrivedEvent(NamedTuple):
    """A verified event to record: `document` is its JSON text as it arrived; `queue` and
    `actor` name the message that will process it. With `carried`, the message handed back for
    publishing carries the document and a payment id drawn for it (the actor's ``document`` and
    ``payment_id``), so the actor need not read the event; the stored message does not."""

    provider: str
    event_key: str
    kind: str
    document: str
    queue: str
    actor: str
    carried: bool = False


async def record_with_messages(
    conn: asyncpg.Connection, events: Sequence[ArrivedEvent]
) -> list[tuple[bool, OutboxMessage | None]]:
    """Record new events and the outbox messages that will process them, in one statement.

    One round trip and one commit for a whole batch instead of a transaction's four round trips
    per event: this is the ingress hot path, where webhooks arriving together are committed
    together (`colmena.http.webhooks.InboxWriter`). PostgreSQL reads each document as jsonb, so
    the ingress does not encode again what it just parsed; a value jsonb cannot hold fails the
    whole statement with `asyncpg.DataError`, and nothing of the batch is stored.

    Per event, in order: (True, its message) when it is new; (False, None) for a duplicate, of a
    stored event or of one earlier in the same batch. Concurrent duplicates are settled by the
    unique key: exactly one insert wins, so five simultaneous deliveries make one row and one
    message. Each event is stored with the SHA-256 of its document, which a carried message's
    settlement checks (`ArrivedEvent.carried`).
    """
    message_ids = [str(uuid.uuid4()) for _ in events]
    rows = await conn.fetch(
        """
        WITH arrived AS (
            SELECT * FROM unnest(
                $1::text[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::text[],
                $8::bytea[], $9::boolean[]
            ) WITH ORDINALITY
                AS a (provider, event_key, kind, document, message_id, queue, actor, sha256,
                      carried, n)
        ), new_event AS (
            INSERT INTO inbox (provider, event_key, kind, payload, document_sha256)
            SELECT provider, event_key, kind, document::jsonb, sha256 FROM arrived ORDER BY n
            ON CONFLICT (provider, event_key) DO NOTHING
            RETURNING id, provider, event_key
        ), message AS (
            INSERT INTO outbox (message_id, queue, actor, args, dedupe_key)
            SELECT first.message_id, first.queue, first.actor, jsonb_build_array(new_event.id),
                   'inbox:' || new_event.id
            FROM new_event JOIN (
                SELECT DISTINCT ON (provider, event_key) * FROM arrived
                ORDER BY provider, event_key, n
            ) AS first USING (provider, event_key)
            RETURNING id, message_id, (args ->> 0)::bigint AS inbox_id
        )
        SELECT message.id, message.inbox_id,
            CASE WHEN message.id IS NOT NULL AND arrived.carried
                 THEN nextval('payments_id_seq') END AS payment_id
        FROM arrived LEFT JOIN message USING (message_id) ORDER BY arrived.n
        """,
        [event.provider for event in events],
        [event.event_key for event in events],
        [event.kind for event in events],
        [event.document for event in events],
        message_ids,
        [event.queue for event in events],
        [event.actor for event in events],
        [hashlib.sha256(event.document.encode()).digest() for event in events],
        [event.carried for event in events],
    )
    # The message is the row just written, known here but for its id and its event's id.
    return [
        (False, None)
        if row["id"] is None
        else (
            True,
            OutboxMessage(
                row["id"],
                message_id,
                event.queue,
                event.actor,
                [row["inbox_id"]],
                {"document": event.document, "payment_id": row["payment_id"]}
                if event.carried
                else {},
            ),
        )
        for event, message_id, row in zip(events, message_ids, rows, strict=True)
    ]


_EVENT_FIELDS = "id, provider, event_key, kind, payload, processed_at"
_SELECT = f"SELECT {_EVENT_FIELDS} FROM inbox WHERE id = $1"


async def load(conn: asyncpg.Connection, inbox_id: int) -> InboxEvent | None:
    """Read the event without locking (to decide whether remote calls are needed at all)."""
    return _event(await conn.fetchrow(_SELECT, inbox_id))


async def load_drawing_payment_id(
    conn: asyncpg.Connection, inbox_id: int
) -> tuple[InboxEvent, int] | None:
    """Read the event without locking, with a payment id drawn from the payments' sequence in
    the same round trip: the id its payment takes if settling it creates one
    (`settlements.create_settled` writes the follow-ups that name the payment in the statement
    that creates it). An id not used is a gap in the sequence, as a rolled-back insert leaves."""
    row = await conn.fetchrow(
        f"SELECT {_EVENT_FIELDS}, nextval('payments_id_seq') AS payment_id"
        " FROM inbox WHERE id = $1",
        inbox_id,
    )
    event = _event(row)
    return None if event is None else (event, row["payment_id"])


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
