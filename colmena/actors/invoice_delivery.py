"""Emailing one stamped invoice, once: the work behind the `deliver_invoice` actor.

A session advisory lock on the invoice spans the render and the SMTP call, so a duplicate
message waits and then finds the invoice emailed. The PDF is rendered in one of the worker's
render processes (`colmena.gateways.pdf_renderer`), off its GIL, once: it is kept on the
invoice row before the email is sent, so a retry on any worker, on any host, sends the stored
bytes without rendering again. A render process that dies fails the attempt with a retryable
error, and the retry renders (the render is a pure function of the stamped XML). If the server
accepted the mail but the process died before recording it, the retry sends it again: a second
copy, never none. A refused email is not caught for its own sake: `MailDeliveryError` says
whether a retry can help.

With ``storage`` configured, XML and PDF are also exported there for the accountant; the files
are never read back, and a failure to write them is logged, not retried: the row holds both.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import asyncpg
import structlog

from colmena.config.metrics import INVOICES
from colmena.errors import PermanentError
from colmena.gateways.cfdi import is_sandbox_stamp
from colmena.gateways.invoice_email import invoice_email
from colmena.gateways.invoice_files import InvoiceFiles, export_missing, invoice_files
from colmena.gateways.mail import Attachment, MailDeliveryError
from colmena.gateways.mailer import Mailer
from colmena.gateways.pdf_renderer import PdfRenderer
from colmena.store import invoices, payments
from colmena.store.locks import advisory_lock, lock_space

log = structlog.get_logger(__name__)

DELIVERY_LOCK = lock_space("CFDI")


async def deliver(
    pool: asyncpg.Pool,
    invoice_id: int,
    *,
    mailer: Mailer,
    renderer: PdfRenderer,
    storage: Path | None,
    issuer_name: str | None,
) -> None:
    """Render (once) and keep the PDF, then email XML and PDF to the receiver, unless done
    before."""
    async with pool.acquire() as conn, advisory_lock(conn, DELIVERY_LOCK, invoice_id):
        await _deliver_locked(
            conn,
            invoice_id,
            mailer=mailer,
            renderer=renderer,
            storage=storage,
            issuer_name=issuer_name,
        )


async def _deliver_locked(
    conn: asyncpg.Connection,
    invoice_id: int,
    *,
    mailer: Mailer,
    renderer: PdfRenderer,
    storage: Path | None,
    issuer_name: str | None,
) -> None:
    invoice = await invoices.get(conn, invoice_id)
    if invoice is None:
        raise PermanentError(f"invoice {invoice_id} does not exist")
    if invoice.stamped_xml is None or invoice.uuid is None or invoice.fecha_timbrado is None:
        raise PermanentError(f"invoice {invoice_id} is not stamped")
    bound = log.bind(invoice_id=invoice_id, uuid=invoice.uuid)
    if invoice.status == "cancellation_requested":
        bound.info("cancellation requested: invoice not emailed")
        return
    if invoice.held_at is not None:
        bound.info("invoice held while its payment is disputed: not emailed")
        return
    if invoice.emailed_at is not None:
        return
    pdf = invoice.pdf
    if pdf is None:
        rendered = await renderer.render(invoice.stamped_xml)
        pdf = rendered.content
        await invoices.save_pdf(conn, invoice_id, pdf)
        bound.info(
            "invoice PDF rendered",
            render_pid=rendered.pid,
            render_cpu_ms=round(rendered.cpu_seconds * 1000),
        )
    if storage is not None:
        files = invoice_files(
            storage,
            issuer_rfc=invoice.issuer_rfc,
            label=invoice.label,
            uuid=invoice.uuid,
            stamped_at=invoice.fecha_timbrado,
        )
        await _export(conn, invoice_id, files, xml=invoice.stamped_xml, pdf=pdf)
    if not invoice.receiver_email and invoice.cfdi_type == "E":
        # A credit note against the global invoice: público en general has no address, and
        # the note is filed (PDF kept, exported) for the books, which is all it needs.
        bound.info("credit note has no receiver to email: filed only")
        return
    if not invoice.receiver_email:
        raise PermanentError(
            f"invoice {invoice_id}: the payment has no customer email to send it to"
        )
    payment = await payments.get(conn, invoice.payment_id)
    if payment is None:
        raise PermanentError(f"payment {invoice.payment_id} of invoice {invoice_id} is gone")
    email = invoice_email(
        locale=payment.customer_locale or payment.metadata.get("locale"),
        issuer_name=issuer_name or invoice.issuer_rfc,
        label=invoice.label,
        total=invoice.total or Decimal(0),
        currency=invoice.currency or "MXN",
        uuid=invoice.uuid,
        sandbox=is_sandbox_stamp(invoice.stamped_xml),
    )
    name = f"{invoice.label}_{invoice.uuid}"
    attachments = [
        Attachment(f"{name}.xml", invoice.stamped_xml, "application/xml"),
        Attachment(f"{name}.pdf", pdf, "application/pdf"),
    ]
    try:
        message_id = await mailer.send_email(invoice.receiver_email, email, attachments)
    except MailDeliveryError:
        INVOICES.labels(outcome="email_failed").inc()
        raise
    await invoices.mark_emailed(conn, invoice_id, message_id)
    INVOICES.labels(outcome="emailed").inc()
    bound.info("invoice emailed", email_message_id=message_id)


async def _export(
    conn: asyncpg.Connection, invoice_id: int, files: InvoiceFiles, *, xml: bytes, pdf: bytes
) -> None:
    """The accountant's copies of XML and PDF on this host; their paths go on the row."""
    try:
        await asyncio.to_thread(export_missing, files, xml=xml, pdf=pdf)
    except OSError as exc:
        log.error(
            "invoice export failed; the database keeps XML and PDF",
            invoice_id=invoice_id,
            path=str(files.xml.parent),
            error=str(exc),
        )
        return
    await invoices.set_files(conn, invoice_id, xml_path=str(files.xml), pdf_path=str(files.pdf))
