"""The rows of operators' reports, read through a server-side cursor.

A report may cover a year of payments, so its rows are never fetched at once: each query runs
as a cursor inside a read-only, repeatable-read transaction (one consistent snapshot from the
first row to the last) and is read `fetch` rows at a time. The caller consumes the async
iterator as it writes; memory is one batch whatever the range. No secret column is selected:
no license key, no XML, no token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg

from colmena.domain.money import from_minor
from colmena.domain.report_rows import license_state

_PAYMENTS = """
SELECT id, provider, provider_payment_id, created_at, status, status_at, approved_at,
       amount_minor, currency, customer_email, product_ref, product_kind, tenant_ref, order_id
FROM payments
WHERE created_at >= $1 AND created_at < $2 AND ($3::text IS NULL OR provider = $3)
ORDER BY created_at, id
"""

_INVOICES = """
SELECT i.id, i.payment_id, i.cfdi_type, i.series, i.folio, i.status, i.uuid, i.receiver_rfc,
       i.total, i.currency, i.created_at, i.fecha_timbrado AS stamped_at,
       c.state AS cancellation, p.provider
FROM invoices i
JOIN payments p ON p.id = i.payment_id
LEFT JOIN invoice_cancellations c ON c.invoice_id = i.id
WHERE i.created_at >= $1 AND i.created_at < $2 AND ($3::text IS NULL OR p.provider = $3)
ORDER BY i.created_at, i.id
"""

_LICENSES = """
SELECT l.id, l.payment_id, l.product_ref, l.edition, l.seats, l.customer_email, l.issued_at,
       l.expires_at, l.revoked_at, l.suspended_at, l.revoked_reason, p.amount_minor,
       p.currency, p.provider
FROM licenses l
JOIN payments p ON p.id = l.payment_id
WHERE l.issued_at >= $1 AND l.issued_at < $2 AND ($3::text IS NULL OR p.provider = $3)
ORDER BY l.issued_at, l.id
"""

_AUDIT = """
SELECT e.id, e.recorded_at, e.actor, e.action, e.subject_kind, e.subject_id,
       e.before::text AS before, e.after::text AS after, e.cause, s.seq AS seal_seq,
       encode(s.hash, 'hex') AS seal_hash
FROM audit_events e
LEFT JOIN audit_seals s ON s.event_id = e.id
WHERE e.recorded_at >= $1 AND e.recorded_at < $2
ORDER BY e.id
"""

QUERIES = {"payments": _PAYMENTS, "invoices": _INVOICES, "licenses": _LICENSES, "audit": _AUDIT}


async def stream(
    conn: asyncpg.Connection, query: str, *args: Any, fetch: int
) -> AsyncIterator[asyncpg.Record]:
    """`query`'s rows through a server-side cursor, `fetch` at a time, in one snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        async for row in conn.cursor(query, *args, prefetch=fetch):
            yield row


def _shaped(kind: str, row: asyncpg.Record) -> dict[str, Any]:
    """Minor units as the Decimal amount they make in the row's currency; a license's state."""
    values = dict(row)
    if "amount_minor" in values:
        values["amount"] = from_minor(values.pop("amount_minor"), values["currency"])
    if kind == "licenses":
        values["state"] = license_state(values["revoked_at"], values.pop("suspended_at"))
    return values


async def report_rows(
    conn: asyncpg.Connection,
    kind: str,
    start: datetime,
    end: datetime,
    *,
    provider: str | None,
    fetch: int,
) -> AsyncIterator[dict[str, Any]]:
    """The rows of report `kind` (payments, invoices, licenses, audit) in [start, end)."""
    args: tuple[Any, ...] = (start, end) if kind == "audit" else (start, end, provider)
    async for row in stream(conn, QUERIES[kind], *args, fetch=fetch):
        yield _shaped(kind, row)
