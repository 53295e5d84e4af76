"""Queries on credit notes: the Egreso rows of `invoices` (migration 0018 says why there).

Every other query on an invoice row (sealing, stamping, delivery) is `colmena.store.invoices`';
here are only the ones that know a row is an Egreso: which refund it covers and what it credits.
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg

from colmena.store import invoices
from colmena.store.invoices import InvoiceRecord


async def for_refund(
    conn: asyncpg.Connection, payment_id: int, refunded_through_minor: int
) -> InvoiceRecord | None:
    """The payment's credit note issued for this cumulative refund, if there is one."""
    invoice_id = await conn.fetchval(
        "SELECT id FROM invoices WHERE cfdi_type = 'E' AND payment_id = $1 "
        "AND refunded_through_minor = $2",
        payment_id,
        refunded_through_minor,
    )
    return await invoices.get(conn, invoice_id) if invoice_id is not None else None


async def credited_through(conn: asyncpg.Connection, payment_id: int) -> int:
    """The cumulative refund the payment's credit notes cover (0: none). A refused note counts:
    its refund is the operator's to settle (`colmena invoices retry`), never credited twice."""
    through: int = await conn.fetchval(
        "SELECT coalesce(max(refunded_through_minor), 0) FROM invoices "
        "WHERE cfdi_type = 'E' AND payment_id = $1",
        payment_id,
    )
    return through


async def create(
    conn: asyncpg.Connection,
    *,
    payment_id: int,
    issuer_rfc: str,
    series: str,
    related_uuid: str,
    refunded_through_minor: int,
    credit: Decimal,
) -> InvoiceRecord:
    """A credit note with the issuer's next folio in `series`, in the caller's transaction; the
    caller holds the payment's row lock and found no note for this refund under it."""
    folio = await invoices.next_folio(conn, issuer_rfc=issuer_rfc, series=series)
    invoice_id = await conn.fetchval(
        """
        INSERT INTO invoices (payment_id, issuer_rfc, series, folio, cfdi_type, related_uuid,
            refunded_through_minor, total)
        VALUES ($1, $2, $3, $4, 'E', $5, $6, $7)
        RETURNING id
        """,
        payment_id,
        issuer_rfc,
        series,
        folio,
        related_uuid,
        refunded_through_minor,
        credit,
    )
    created = await invoices.get(conn, invoice_id)
    if created is None:  # inserted by this transaction
        raise RuntimeError(f"credit note {invoice_id} vanished in its own transaction")
    return created


async def of_payment(conn: asyncpg.Connection, payment_id: int) -> list[InvoiceRecord]:
    """The payment's credit notes, oldest first."""
    ids = await conn.fetch(
        "SELECT id FROM invoices WHERE cfdi_type = 'E' AND payment_id = $1 ORDER BY id",
        payment_id,
    )
    found = [await invoices.get(conn, row["id"]) for row in ids]
    return [note for note in found if note is not None]


async def defer(conn: asyncpg.Connection, payment_id: int, refunded_minor: int) -> None:
    """Keep a refund whose credited CFDI is not stamped yet, once."""
    await conn.execute(
        "INSERT INTO deferred_credit_notes (payment_id, refunded_minor) VALUES ($1, $2) "
        "ON CONFLICT DO NOTHING",
        payment_id,
        refunded_minor,
    )


async def take_ready(conn: asyncpg.Connection, *, limit: int) -> list[tuple[int, int]]:
    """Remove and return (payment id, cumulative refund) of deferred refunds whose credited CFDI
    is now stamped (the payment's Ingreso, or the CFDI global covering it), in the caller's
    transaction; rows another transaction holds are skipped."""
    rows = await conn.fetch(
        """
        DELETE FROM deferred_credit_notes d
        WHERE (d.payment_id, d.refunded_minor) IN (
            SELECT x.payment_id, x.refunded_minor FROM deferred_credit_notes x
            WHERE EXISTS (
                SELECT 1 FROM invoices i
                WHERE i.payment_id = x.payment_id AND i.cfdi_type = 'I' AND i.uuid IS NOT NULL)
            OR EXISTS (
                SELECT 1 FROM global_invoice_payments m
                JOIN global_invoices g ON g.id = m.global_invoice_id
                WHERE m.payment_id = x.payment_id AND g.uuid IS NOT NULL)
            ORDER BY x.deferred_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED)
        RETURNING d.payment_id, d.refunded_minor
        """,
        limit,
    )
    return [(row["payment_id"], row["refunded_minor"]) for row in rows]


async def refund_of(conn: asyncpg.Connection, note_id: int) -> int | None:
    """The cumulative refund (minor units) a credit note row credits through; None for an
    invoice that is not a credit note."""
    value = await conn.fetchval(
        "SELECT refunded_through_minor FROM invoices WHERE id = $1 AND cfdi_type = 'E'", note_id
    )
    return int(value) if value is not None else None
