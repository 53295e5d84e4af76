"""The reconciliation report's reads: each payment of a range joined with its license, invoice,
cancellation, credit notes, CFDI global membership and order; and what colmena holds of one
provider's payments, for comparing with that provider's own records.

The join is one query read through a server-side cursor (`colmena.store.reports.stream`), so a
year of payments is judged one batch at a time; only the disagreements are kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg

from colmena.domain.reconciliation import (
    Disagreement,
    Held,
    PaymentFacts,
    judge,
)
from colmena.store.reports import stream

DEFAULT_FETCH = 500
DEFAULT_GRACE = timedelta(minutes=15)

_FACTS = """
SELECT p.id, p.provider, p.provider_payment_id, p.status, p.status_at, p.approved_at,
       p.amount_minor, p.currency, p.product_kind,
       coalesce(p.metadata ->> 'rfc', '') <> '' AS wants_invoice,
       l.id::text AS license_id, l.revoked_at IS NOT NULL AS license_revoked,
       i.id AS invoice_id, i.status AS invoice_status, i.total AS invoice_total,
       i.currency AS invoice_currency, c.state AS cancellation_state,
       coalesce((SELECT max(e.refunded_through_minor) FROM invoices e
                 WHERE e.payment_id = p.id AND e.cfdi_type = 'E' AND e.status <> 'failed'), 0)
           AS credited_minor,
       EXISTS (SELECT 1 FROM global_invoice_payments g WHERE g.payment_id = p.id)
           AS on_global_invoice,
       o.id::text AS order_id, o.amount AS order_amount, o.currency AS order_currency
FROM payments p
LEFT JOIN licenses l ON l.payment_id = p.id
LEFT JOIN invoices i ON i.payment_id = p.id AND i.cfdi_type = 'I'
LEFT JOIN invoice_cancellations c ON c.invoice_id = i.id
LEFT JOIN orders o ON o.id = p.order_id
WHERE p.created_at >= $1 AND p.created_at < $2 AND ($3::text IS NULL OR p.provider = $3)
ORDER BY p.created_at, p.id
"""


def _facts(row: asyncpg.Record) -> PaymentFacts:
    values = dict(row)
    values["payment_id"] = values.pop("id")
    return PaymentFacts(**values)


async def find_disagreements(
    conn: asyncpg.Connection,
    start: datetime,
    end: datetime,
    *,
    provider: str | None = None,
    grace: timedelta = DEFAULT_GRACE,
    now: datetime | None = None,
    fetch: int = DEFAULT_FETCH,
) -> list[Disagreement]:
    """Every disagreement among payments created in [start, end) and their license, invoice
    and order (`colmena.domain.reconciliation.judge`). `conn` must not be in a transaction
    the caller needs afterwards: the read runs in a read-only snapshot of its own."""
    moment = now or datetime.now(UTC)
    found: list[Disagreement] = []
    async for row in stream(conn, _FACTS, start, end, provider, fetch=fetch):
        found.extend(judge(_facts(row), now=moment, grace=grace))
    return found


_HELD_BETWEEN = """
SELECT provider_payment_id, id, status, amount_minor, currency FROM payments
WHERE provider = $1 AND created_at >= $2 AND created_at < $3
ORDER BY created_at, id
"""


async def held_between(
    conn: asyncpg.Connection, provider: str, start: datetime, end: datetime, *, fetch: int
) -> AsyncIterator[tuple[str, Held]]:
    """colmena's payments of `provider` created in [start, end), one batch at a time."""
    async for row in stream(conn, _HELD_BETWEEN, provider, start, end, fetch=fetch):
        yield (
            row["provider_payment_id"],
            Held(row["id"], row["status"], row["amount_minor"], row["currency"]),
        )


async def held_by_ids(
    conn: asyncpg.Connection, provider: str, ids: Sequence[str]
) -> dict[str, Held]:
    """colmena's rows for these provider payment ids (one page of the provider's list)."""
    rows = await conn.fetch(
        "SELECT provider_payment_id, id, status, amount_minor, currency FROM payments "
        "WHERE provider = $1 AND provider_payment_id = ANY($2::text[])",
        provider,
        list(ids),
    )
    return {
        row["provider_payment_id"]: Held(
            row["id"], row["status"], row["amount_minor"], row["currency"]
        )
        for row in rows
    }
