"""Asking for a CFDI's cancellation: the check and the record, in the caller's transaction.

`colmena invoices cancel`, the operator console and the refund path
(`colmena.actors.invoice_cancellation`) all ask through `record_request`; filing it with the
PAC and following the SAT stay the actor's.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import asyncpg
import structlog
from lxml import etree

from colmena.config.metrics import CFDI_CANCELLATIONS
from colmena.domain.cancellation import CancellationRefused, cancellation_request, needs_acceptance
from colmena.store import cancellations, invoices
from colmena.store.cancellations import CancellationRecord
from colmena.store.invoices import InvoiceRecord

log = structlog.get_logger(__name__)


def _total_mxn(stamped_xml: bytes) -> tuple[Decimal, str]:
    """The CFDI's total in pesos (Total x TipoCambio) and its TipoDeComprobante."""
    root = etree.fromstring(stamped_xml)
    total = Decimal(root.attrib["Total"])
    if root.attrib.get("Moneda", "MXN") != "MXN":
        total *= Decimal(root.attrib.get("TipoCambio", "1"))
    return total, root.attrib.get("TipoDeComprobante", "I")


def stamped_xml_of(invoice: InvoiceRecord) -> bytes:
    if invoice.stamped_xml is None:
        raise CancellationRefused(f"invoice {invoice.id} is not stamped: nothing to cancel")
    return invoice.stamped_xml


async def record_request(
    conn: asyncpg.Connection,
    invoice_id: int,
    *,
    motive: str,
    replacement_uuid: str | None,
    source: str,
    now: dt.datetime,
) -> CancellationRecord:
    """Check and record a cancellation in the caller's transaction, under the invoice's row
    lock; CancellationRefused (and nothing written) when it cannot be asked for."""
    invoice = await invoices.get(conn, invoice_id, for_update=True)
    if invoice is None:
        raise CancellationRefused(f"no invoice {invoice_id}")
    current = await cancellations.get(conn, invoice_id, for_update=True)
    request = cancellation_request(
        invoice_id=invoice_id,
        uuid=invoice.uuid,
        motive=motive,
        replacement_uuid=replacement_uuid,
        current=current.state if current is not None else None,
    )
    total_mxn, voucher_type = _total_mxn(stamped_xml_of(invoice))
    record = await cancellations.request(
        conn,
        invoice_id,
        request,
        needs_acceptance=needs_acceptance(
            total_mxn=total_mxn,
            receiver_rfc=invoice.receiver_rfc or "",
            voucher_type=voucher_type,
            issued_at=invoice.fecha_timbrado or now,
            requested_at=now,
        ),
        source=source,
        now=now,
    )
    await invoices.request_cancellation(conn, invoice_id)
    CFDI_CANCELLATIONS.labels(outcome="requested").inc()
    log.info(
        "cfdi cancellation requested",
        invoice_id=invoice_id,
        uuid=invoice.uuid,
        motive=request.motive.value,
        needs_acceptance=record.needs_acceptance,
        source=source,
    )
    return record
