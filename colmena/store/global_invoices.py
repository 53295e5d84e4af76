"""Queries on the CFDI global: the period's row, the sales it covers, its stamping state.

The row plays the part an invoice row plays for one payment (see `colmena.store.invoices`):
created once per issuer and period (UNIQUE), with the sales it covers recorded in the same
transaction, its sealed XML and PAC reference fixed before the first PAC call.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, fields
from decimal import Decimal

import asyncpg

from colmena.domain.global_invoice import Period
from colmena.store.invoices import next_folio
from colmena.store.locks import lock_space
from colmena.store.payments import Payment

# Held (keyed by the issuer's RFC) around a run that opens and stamps global invoices.
GLOBAL_LOCK_SPACE = lock_space("GLOB")

_COLUMNS = (
    "id, issuer_rfc, periodicity, period_first, period_after, status, series, folio, total, "
    "pac_reference, signed_xml, signed_at, stamped_xml, uuid, fecha_timbrado, recovered, "
    "attempts, failure_code, failure_message, created_at, updated_at"
)
# Derived from the dataclass, so it follows `colmena.store.payments` without a second list.
_PAYMENT_COLUMNS = ", ".join(f"p.{column.name}" for column in fields(Payment))


@dataclass(frozen=True)
class GlobalInvoiceRecord:
    id: int
    issuer_rfc: str
    periodicity: str
    period_first: dt.date
    period_after: dt.date
    status: str
    series: str
    folio: int
    total: Decimal | None
    pac_reference: uuid.UUID
    signed_xml: bytes | None
    signed_at: dt.datetime | None
    stamped_xml: bytes | None
    uuid: str | None
    fecha_timbrado: dt.datetime | None
    recovered: bool
    attempts: int
    failure_code: str | None
    failure_message: str | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def label(self) -> str:
        return f"{self.series}{self.folio}"


@dataclass(frozen=True)
class Membership:
    """Where a payment was invoiced globally: what an Egreso for its refund relates to."""

    global_invoice_id: int
    uuid: str | None
    status: str


def _record(row: asyncpg.Record) -> GlobalInvoiceRecord:
    return GlobalInvoiceRecord(**dict(row))


async def get(
    conn: asyncpg.Connection, global_invoice_id: int, *, for_update: bool = False
) -> GlobalInvoiceRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM global_invoices WHERE id = $1{lock}", global_invoice_id
    )
    return _record(row) if row is not None else None


async def open_period(
    conn: asyncpg.Connection, *, issuer_rfc: str, series: str, period: Period
) -> GlobalInvoiceRecord | None:
    """The period's global invoice: the existing one, or a new one covering every sale of the
    period that is still uninvoiced; None when there is none to cover. In the caller's
    transaction.

    A sale qualifies when approved within the period, in MXN, without an RFC, and neither
    invoiced individually nor on another global invoice. The payments are locked (the stamper
    takes the same row lock before it creates an individual invoice), so a sale cannot be
    invoiced both ways by two transactions at once. Runs of one issuer are serialised by the
    caller (`GLOBAL_LOCK_SPACE`); the UNIQUE period key is the backstop.
    """
    existing = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM global_invoices "
        "WHERE issuer_rfc = $1 AND periodicity = $2 AND period_first = $3",
        issuer_rfc,
        period.periodicity.code,
        period.first,
    )
    if existing is not None:
        return _record(existing)
    sales = await conn.fetch(
        """
        SELECT p.id FROM payments p
        WHERE p.status = 'approved' AND p.approved_at >= $1 AND p.approved_at < $2
            AND lower(p.currency) = 'mxn' AND coalesce(p.metadata->>'rfc', '') = ''
            AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.payment_id = p.id)
            AND NOT EXISTS (SELECT 1 FROM global_invoice_payments g WHERE g.payment_id = p.id)
        ORDER BY p.approved_at, p.id
        FOR UPDATE OF p
        """,
        period.starts_at,
        period.ends_at,
    )
    if not sales:
        return None
    folio = await next_folio(conn, issuer_rfc=issuer_rfc, series=series)
    row = await conn.fetchrow(
        f"""
        INSERT INTO global_invoices (issuer_rfc, periodicity, period_first, period_after, series,
            folio)
        VALUES ($1, $2, $3, $4, $5, $6)
        RETURNING {_COLUMNS}
        """,
        issuer_rfc,
        period.periodicity.code,
        period.first,
        period.after,
        series,
        folio,
    )
    await conn.executemany(
        "INSERT INTO global_invoice_payments (global_invoice_id, payment_id, position) "
        "VALUES ($1, $2, $3)",
        [(row["id"], sale["id"], position) for position, sale in enumerate(sales)],
    )
    return _record(row)


async def sales_of(conn: asyncpg.Connection, global_invoice_id: int) -> list[Payment]:
    """The payments the global invoice covers, in their Conceptos' order."""
    rows = await conn.fetch(
        f"SELECT {_PAYMENT_COLUMNS} FROM global_invoice_payments g "
        "JOIN payments p ON p.id = g.payment_id WHERE g.global_invoice_id = $1 "
        "ORDER BY g.position",
        global_invoice_id,
    )
    return [Payment(**dict(row)) for row in rows]


async def unstamped(conn: asyncpg.Connection) -> list[int]:
    """Global invoices opened and neither stamped nor refused: what a tick still has to stamp."""
    rows = await conn.fetch(
        "SELECT id FROM global_invoices WHERE status IN ('pending', 'stamping') ORDER BY id"
    )
    return [row["id"] for row in rows]


async def save_signed(
    conn: asyncpg.Connection, global_invoice_id: int, *, xml: bytes, total: Decimal
) -> None:
    await conn.execute(
        "UPDATE global_invoices SET signed_xml = $2, signed_at = now(), total = $3, "
        "updated_at = now() WHERE id = $1",
        global_invoice_id,
        xml,
        total,
    )


async def begin_attempt(conn: asyncpg.Connection, global_invoice_id: int) -> None:
    await conn.execute(
        "UPDATE global_invoices SET attempts = attempts + 1, status = 'stamping', "
        "updated_at = now() WHERE id = $1",
        global_invoice_id,
    )


async def mark_stamped(
    conn: asyncpg.Connection,
    global_invoice_id: int,
    *,
    stamped_xml: bytes,
    uuid: str,
    fecha_timbrado: dt.datetime,
    recovered: bool,
) -> None:
    await conn.execute(
        """
        UPDATE global_invoices SET status = 'stamped', stamped_xml = $2, uuid = $3,
            fecha_timbrado = $4, recovered = $5, failure_code = NULL, failure_message = NULL,
            updated_at = now()
        WHERE id = $1
        """,
        global_invoice_id,
        stamped_xml,
        uuid,
        fecha_timbrado,
        recovered,
    )


async def note_failure(
    conn: asyncpg.Connection,
    global_invoice_id: int,
    *,
    code: str,
    message: str,
    final: bool,
) -> None:
    """Why the last attempt failed; `final` (a definite refusal) ends the stamping."""
    await conn.execute(
        """
        UPDATE global_invoices SET failure_code = $2, failure_message = $3, updated_at = now(),
            status = CASE WHEN $4 THEN 'failed' ELSE status END
        WHERE id = $1
        """,
        global_invoice_id,
        code[:100],
        message[:2000],
        final,
    )


async def membership(conn: asyncpg.Connection, payment_id: int) -> Membership | None:
    """The global invoice that covers the payment, if one does."""
    row = await conn.fetchrow(
        "SELECT g.id AS global_invoice_id, g.uuid, g.status FROM global_invoice_payments m "
        "JOIN global_invoices g ON g.id = m.global_invoice_id WHERE m.payment_id = $1",
        payment_id,
    )
    return Membership(**dict(row)) if row is not None else None
