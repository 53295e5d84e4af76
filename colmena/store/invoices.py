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
    "email_message_id, cancel_requested_at, held_at, hold_reason, created_at, updated_at"
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
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM invoices WHERE payment_id = $1{lock}", payment_id
    )
    return _record(row) if row is not None else None


async def create(
    conn: asyncpg.Connection, *, payment_id: int, issuer_rfc: str, series: str
) -> InvoiceRecord:
    """The payment's invoice with the issuer's next folio, in the caller's transaction.

    The caller holds the payment row lock (and found no invoice under it), so the folio is
    never taken by an insert that then conflicts.
    """
    folio = await conn.fetchval(
        """
        INSERT INTO invoice_folios AS f (issuer_rfc, series, last_folio) VALUES ($1, $2, 1)
        ON CONFLICT (issuer_rfc, series) DO UPDATE SET last_folio = f.last_folio + 1
        RETURNING last_folio
        """,
        issuer_rfc,
        series,
    )
    row = await conn.fetchrow(
        f"INSERT INTO invoices (payment_id, issuer_rfc, series, folio) VALUES ($1, $2, $3, $4) "
        f"RETURNING {_COLUMNS}",
        payment_id,
        issuer_rfc,
        series,
        folio,
    )
    return _record(row)


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
        f"WHERE payment_id = $1 RETURNING {_COLUMNS}",
        payment_id,
        reason,
    )
    return _record(row) if row is not None else None


async def release(conn: asyncpg.Connection, payment_id: int) -> InvoiceRecord | None:
    """Release the hold on the payment's invoice; the invoice as it now is, None when it has
    none or it was not held."""
    row = await conn.fetchrow(
        f"UPDATE invoices SET held_at = NULL, hold_reason = NULL, updated_at = now() "
        f"WHERE payment_id = $1 AND held_at IS NOT NULL RETURNING {_COLUMNS}",
        payment_id,
    )
    return _record(row) if row is not None else None
