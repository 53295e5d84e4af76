"""Queries on CFDI invoices: one row per payment, created before the PAC is ever called.

The row is the memory that makes stamping safe to retry: its ``pac_reference`` and
``signed_xml`` are fixed on the first attempt, so every later attempt sends the PAC the same
bytes under the same reference and gets the same stamp back. It also holds what is delivered,
the stamped XML and the rendered PDF, so any worker on any host can deliver it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal

import asyncpg

_COLUMNS = (
    "id, payment_id, status, issuer_rfc, series, folio, receiver_rfc, receiver_email, currency, "
    "total, pac_reference, signed_xml, signed_at, stamped_xml, uuid, fecha_timbrado, recovered, "
    "pdf, xml_path, pdf_path, attempts, failure_source, failure_code, failure_message, emailed_at, "
    "email_message_id, cancel_requested_at, held_at, hold_reason, cfdi_type, created_at, "
    "updated_at"
)
_SUMMARY = (
    "id, payment_id, status, series, folio, receiver_rfc, total, currency, uuid, attempts, "
    "failure_code, emailed_at, created_at"
)

STATUSES = ("pending", "stamping", "stamped", "failed", "cancellation_requested")


@dataclass(frozen=True)
class InvoiceRecord:
    id: int
    payment_id: int
    status: str
    issuer_rfc: str
    series: str
    folio: int
    receiver_rfc: str | None
    receiver_email: str | None
    currency: str | None
    total: Decimal | None
    pac_reference: uuid.UUID
    signed_xml: bytes | None
    signed_at: dt.datetime | None
    stamped_xml: bytes | None
    uuid: str | None
    fecha_timbrado: dt.datetime | None
    recovered: bool
    # The PDF as rendered once from stamped_xml; every later delivery sends these bytes.
    pdf: bytes | None
    # Where a worker last exported copies for the accountant (on its own host), if it did.
    xml_path: str | None
    pdf_path: str | None
    attempts: int
    failure_source: str | None
    failure_code: str | None
    failure_message: str | None
    emailed_at: dt.datetime | None
    email_message_id: str | None
    cancel_requested_at: dt.datetime | None
    # Set while the payment is disputed: the invoice is neither stamped nor emailed until the
    # hold is released (dispute won) or its cancellation requested (dispute lost).
    held_at: dt.datetime | None
    hold_reason: str | None
    # 'I' an Ingreso (the sale), 'E' an Egreso (a credit note for a refund).
    cfdi_type: str
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def label(self) -> str:
        return f"{self.series}{self.folio}"


@dataclass(frozen=True)
class InvoiceSummary:
    id: int
    payment_id: int
    status: str
    series: str
    folio: int
    receiver_rfc: str | None
    total: Decimal | None
    currency: str | None
    uuid: str | None
    attempts: int
    failure_code: str | None
    emailed_at: dt.datetime | None
    created_at: dt.datetime


def _record(row: asyncpg.Record) -> InvoiceRecord:
    return InvoiceRecord(**dict(row))


async def get(
    conn: asyncpg.Connection, invoice_id: int, *, for_update: bool = False
) -> InvoiceRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM invoices WHERE id = $1{lock}", invoice_id)
    return _record(row) if row is not None else None


async def get_by_payment(
    conn: asyncpg.Connection, payment_id: int, *, for_update: bool = False
) -> InvoiceRecord | None:
    """The payment's Ingreso (its credit notes: `colmena.store.credit_notes`)."""
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM invoices WHERE payment_id = $1 AND cfdi_type = 'I'{lock}",
        payment_id,
    )
    return _record(row) if row is not None else None


async def create(
    conn: asyncpg.Connection, *, payment_id: int, issuer_rfc: str, series: str
) -> InvoiceRecord:
    """The payment's invoice with the issuer's next folio, in the caller's transaction.

    The caller holds the payment row lock (and found no invoice under it), so the folio is
    never taken by an insert that then conflicts.
    """
    folio = await next_folio(conn, issuer_rfc=issuer_rfc, series=series)
    row = await conn.fetchrow(
        f"INSERT INTO invoices (payment_id, issuer_rfc, series, folio) VALUES ($1, $2, $3, $4) "
        f"RETURNING {_COLUMNS}",
        payment_id,
        issuer_rfc,
        series,
        folio,
    )
    return _record(row)


async def next_folio(conn: asyncpg.Connection, *, issuer_rfc: str, series: str) -> int:
    """The issuer's next folio in `series`, taken in the caller's transaction (a rollback gives
    it back). Every CFDI of the issuer and series draws from this one counter, so an Ingreso, an
    Egreso and a global invoice never share a folio."""
    folio: int = await conn.fetchval(
        """
        INSERT INTO invoice_folios AS f (issuer_rfc, series, last_folio) VALUES ($1, $2, 1)
        ON CONFLICT (issuer_rfc, series) DO UPDATE SET last_folio = f.last_folio + 1
        RETURNING last_folio
        """,
        issuer_rfc,
        series,
    )
    return folio


async def save_signed(
    conn: asyncpg.Connection,
    invoice_id: int,
    *,
    xml: bytes,
    total: Decimal,
    currency: str,
    receiver_rfc: str,
    receiver_email: str | None,
) -> None:
    await conn.execute(
        """
        UPDATE invoices SET signed_xml = $2, signed_at = now(), total = $3, currency = $4,
            receiver_rfc = $5, receiver_email = $6, updated_at = now()
        WHERE id = $1
        """,
        invoice_id,
        xml,
        total,
        currency,
        receiver_rfc,
        receiver_email,
    )


async def begin_attempt(conn: asyncpg.Connection, invoice_id: int) -> None:
    """Count a PAC call before making it; a cancellation request keeps its status."""
    await conn.execute(
        """
        UPDATE invoices SET attempts = attempts + 1, updated_at = now(),
            status = CASE WHEN status = 'cancellation_requested' THEN status ELSE 'stamping' END
        WHERE id = $1
        """,
        invoice_id,
    )


async def mark_stamped(
    conn: asyncpg.Connection,
    invoice_id: int,
    *,
    stamped_xml: bytes,
    uuid: str,
    fecha_timbrado: dt.datetime,
    recovered: bool,
    xml_path: str | None,
) -> None:
    await conn.execute(
        """
        UPDATE invoices SET stamped_xml = $2, uuid = $3, fecha_timbrado = $4, recovered = $5,
            xml_path = coalesce($6, xml_path), failure_source = NULL, failure_code = NULL,
            failure_message = NULL, updated_at = now(),
            status = CASE WHEN status = 'cancellation_requested' THEN status ELSE 'stamped' END
        WHERE id = $1
        """,
        invoice_id,
        stamped_xml,
        uuid,
        fecha_timbrado,
        recovered,
        xml_path,
    )


async def mark_failed(
    conn: asyncpg.Connection, invoice_id: int, *, source: str, code: str, message: str
) -> None:
    """A definite failure: nothing was stamped and retrying the same document cannot help."""
    await conn.execute(
        """
        UPDATE invoices SET failure_source = $2, failure_code = $3, failure_message = $4,
            updated_at = now(),
            status = CASE WHEN status = 'cancellation_requested' THEN status ELSE 'failed' END
        WHERE id = $1
        """,
        invoice_id,
        source,
        code[:100],
        message[:2000],
    )


async def note_transient(
    conn: asyncpg.Connection, invoice_id: int, *, code: str, message: str
) -> None:
    """Why the last attempt is being retried; the status stays as it is (maybe stamped at the
    PAC)."""
    await conn.execute(
        "UPDATE invoices SET failure_source = 'transient', failure_code = $2, "
        "failure_message = $3, updated_at = now() WHERE id = $1",
        invoice_id,
        code[:100],
        message[:2000],
    )


async def save_pdf(conn: asyncpg.Connection, invoice_id: int, pdf: bytes) -> None:
    """Keep the rendered PDF, so no worker on any host renders it again."""
    await conn.execute(
        "UPDATE invoices SET pdf = $2, updated_at = now() WHERE id = $1", invoice_id, pdf
    )


async def set_files(
    conn: asyncpg.Connection, invoice_id: int, *, xml_path: str, pdf_path: str
) -> None:
    await conn.execute(
        "UPDATE invoices SET xml_path = $2, pdf_path = $3, updated_at = now() WHERE id = $1",
        invoice_id,
        xml_path,
        pdf_path,
    )


async def mark_emailed(conn: asyncpg.Connection, invoice_id: int, message_id: str) -> None:
    await conn.execute(
        "UPDATE invoices SET emailed_at = now(), email_message_id = $2, updated_at = now() "
        "WHERE id = $1",
        invoice_id,
        message_id,
    )


async def request_cancellation(conn: asyncpg.Connection, invoice_id: int) -> None:
    await conn.execute(
        """
        UPDATE invoices SET status = 'cancellation_requested', updated_at = now(),
            cancel_requested_at = coalesce(cancel_requested_at, now())
        WHERE id = $1
        """,
        invoice_id,
    )


async def reset_refused(conn: asyncpg.Connection, invoice_id: int) -> None:
    """Forget a refused document so the next attempt rebuilds and re-seals it (new Fecha).

    Only for status 'failed': the PAC said no (or it was never sent), so no stamp exists for
    the old bytes and a new document cannot be a second stamp of the same sale.
    """
    await conn.execute(
        """
        UPDATE invoices SET status = 'pending', signed_xml = NULL, signed_at = NULL,
            failure_source = NULL, failure_code = NULL, failure_message = NULL,
            pac_reference = gen_random_uuid(), updated_at = now()
        WHERE id = $1 AND status = 'failed'
        """,
        invoice_id,
    )


async def recent(
    conn: asyncpg.Connection, *, limit: int = 50, status: str | None = None
) -> list[InvoiceSummary]:
    rows = await conn.fetch(
        f"SELECT {_SUMMARY} FROM invoices WHERE ($2::text IS NULL OR status = $2) "
        "ORDER BY id DESC LIMIT $1",
        limit,
        status,
    )
    return [InvoiceSummary(**dict(row)) for row in rows]


async def hold(conn: asyncpg.Connection, payment_id: int, reason: str) -> InvoiceRecord | None:
    """Hold the payment's invoice; the invoice as it now is, None when the payment has none (the
    stamper creates none for a payment that is not approved)."""
    row = await conn.fetchrow(
        f"UPDATE invoices SET held_at = coalesce(held_at, now()), "
        f"hold_reason = coalesce(hold_reason, $2), updated_at = now() "
        f"WHERE payment_id = $1 AND cfdi_type = 'I' RETURNING {_COLUMNS}",
        payment_id,
        reason,
    )
    return _record(row) if row is not None else None


async def release(conn: asyncpg.Connection, payment_id: int) -> InvoiceRecord | None:
    """Release the hold on the payment's invoice; the invoice as it now is, None when it has
    none or it was not held."""
    row = await conn.fetchrow(
        f"UPDATE invoices SET held_at = NULL, hold_reason = NULL, updated_at = now() "
        f"WHERE payment_id = $1 AND cfdi_type = 'I' AND held_at IS NOT NULL "
        f"RETURNING {_COLUMNS}",
        payment_id,
    )
    return _record(row) if row is not None else None


async def enter_pac(conn: asyncpg.Connection, invoice_id: int, *, primary: str) -> str:
    """Count an attempt that may reach a PAC, before making it; the PAC it must go to.

    While an earlier attempt may have reached a PAC (``pac_uncertain`` > 0), that PAC; when
    none may have, the primary (migration 0020 says why this never strands a stamp)."""
    provider: str = await conn.fetchval(
        """
        UPDATE invoices SET
            pac_provider = CASE WHEN pac_uncertain = 0 THEN $2 ELSE pac_provider END,
            pac_uncertain = pac_uncertain + 1
        WHERE id = $1 RETURNING pac_provider
        """,
        invoice_id,
        primary,
    )
    return provider


async def leave_pac(
    conn: asyncpg.Connection, invoice_id: int, provider: str, *, switch_to: str | None
) -> bool:
    """Take back one attempt after ``provider`` answered "not stamped" for it. When that was
    the last attempt that might have reached ``provider`` and ``switch_to`` is given, route the
    invoice there instead, counting the attempt about to be sent to it; True when it moved.

    One statement, so two workers on one invoice never both see "nothing outstanding"."""
    moved: str | None = await conn.fetchval(
        """
        UPDATE invoices SET
            pac_provider = CASE WHEN pac_uncertain = 1 AND $3::text IS NOT NULL
                THEN $3 ELSE pac_provider END,
            pac_uncertain = CASE WHEN pac_uncertain = 1 AND $3::text IS NOT NULL
                THEN 1 ELSE pac_uncertain - 1 END
        WHERE id = $1 AND pac_provider = $2 AND pac_uncertain > 0
        RETURNING pac_provider
        """,
        invoice_id,
        provider,
        switch_to,
    )
    return switch_to is not None and moved == switch_to


# `colmena invoices list --state`: where each invoice is in its life, over the invoice (i) and
# its cancellation (c, migration 0017). A rejected or refused cancellation leaves it stamped.
LIST_STATES = {
    "stamped": "i.uuid IS NOT NULL AND i.cfdi_type = 'I' AND i.status <> 'cancellation_requested' "
    "AND (c.state IS NULL OR c.state IN ('rejected', 'refused'))",
    "cancelling": "c.state IN ('requested', 'in_process', 'awaiting_acceptance') "
    "OR (c.state IS NULL AND i.status = 'cancellation_requested')",
    "cancelled": "c.state IN ('cancelled', 'expired')",
    "egreso": "i.cfdi_type = 'E'",
}


async def in_state(conn: asyncpg.Connection, state: str, *, limit: int) -> list[InvoiceSummary]:
    """The newest invoices in one of ``LIST_STATES``."""
    columns = ", ".join(f"i.{name.strip()}" for name in _SUMMARY.split(","))
    rows = await conn.fetch(
        f"SELECT {columns} FROM invoices i "
        f"LEFT JOIN invoice_cancellations c ON c.invoice_id = i.id "
        f"WHERE {LIST_STATES[state]} ORDER BY i.id DESC LIMIT $1",
        limit,
    )
    return [InvoiceSummary(**dict(row)) for row in rows]


@dataclass(frozen=True)
class GlobalSummary:
    """A CFDI global for público en general (migration 0019), as `invoices list` shows it."""

    id: int
    periodicity: str
    period_first: dt.date
    status: str
    series: str
    folio: int
    total: Decimal | None
    payments: int
    uuid: str | None
    attempts: int
    failure_code: str | None


async def recent_global(conn: asyncpg.Connection, *, limit: int) -> list[GlobalSummary]:
    rows = await conn.fetch(
        """
        SELECT g.id, g.periodicity, g.period_first, g.status, g.series, g.folio, g.total,
            (SELECT count(*) FROM global_invoice_payments p WHERE p.global_invoice_id = g.id)
                AS payments,
            g.uuid, g.attempts, g.failure_code
        FROM global_invoices g ORDER BY g.id DESC LIMIT $1
        """,
        limit,
    )
    return [GlobalSummary(**dict(row)) for row in rows]


async def stamping_pac(conn: asyncpg.Connection, invoice_id: int) -> str | None:
    """The PAC the invoice was stamped at (or its attempts go to); None before the failover
    setting existed, when there was only one."""
    value = await conn.fetchval("SELECT pac_provider FROM invoices WHERE id = $1", invoice_id)
    return str(value) if value is not None else None
