"""Invoices: a list by status or payment, one invoice with its cancellation state, its stamped
XML and PDF to download, and a retry.

The files come from PostgreSQL, where the stamper and the PDF renderer keep them (no host holds
them). A retry is `colmena invoices retry`: under the invoice's row lock, the next step queued
again through the outbox (stamping, a refused one reset first; a credit note through its
refund's actor; once stamped, the PDF and email), in an audited transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from colmena.domain.cancellation import CancellationRefused, Motive
from colmena.http.console.core import HtmlError, confirmation, form, see_other, translate
from colmena.http.console.operator_common import (
    ADMIN,
    PAGE_SIZE,
    audited,
    choice,
    connection,
    int_cursor,
    page_of,
    path_int,
    publish,
    query_text,
    show,
)
from colmena.store import cancellations, credit_notes, invoices, outbox
from colmena.store import console_queries as queries
from colmena.store.cancellation_requests import record_request
from colmena.store.invoices import STATUSES, InvoiceRecord

STAMPING_QUEUE = "stamping"
MOTIVES = tuple(motive.value for motive in Motive)


async def invoices_list(request: web.Request) -> web.Response:
    status = choice(request, "status", STATUSES)
    payment = query_text(request, "payment")
    if payment is not None and not (payment.isascii() and payment.isdigit()):
        raise HtmlError(400, "A payment is colmena's payment number")
    async with connection(request) as conn:
        rows = await queries.list_invoices(
            conn,
            status=status,
            payment_id=int(payment) if payment is not None and len(payment) < 19 else None,
            before_id=int_cursor(request),
            limit=PAGE_SIZE,
        )
    return show(
        request,
        "invoices.html",
        {
            "page": page_of(rows, lambda row: row.id),
            "status": status or "",
            "statuses": STATUSES,
            "payment": payment or "",
        },
    )


async def _invoice(request: web.Request) -> InvoiceRecord:
    invoice_id = path_int(request, "invoice_id", "No such invoice")
    async with connection(request) as conn:
        invoice = await invoices.get(conn, invoice_id)
    if invoice is None:
        raise HtmlError(404, "No such invoice")
    return invoice


async def invoice_page(request: web.Request) -> web.Response:
    invoice = await _invoice(request)
    async with connection(request) as conn:
        cancellation = await cancellations.get(conn, invoice.id)
    return show(
        request,
        "invoice.html",
        {"invoice": invoice, "cancellation": cancellation, "motives": MOTIVES},
    )


def _download(invoice: InvoiceRecord, body: bytes | None, kind: str, mime: str) -> web.Response:
    if body is None:
        raise HtmlError(404, "This invoice has no such file yet")
    name = f"{invoice.label}-{invoice.uuid or invoice.id}.{kind}"
    return web.Response(
        body=body,
        content_type=mime,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def invoice_xml(request: web.Request) -> web.Response:
    invoice = await _invoice(request)
    return _download(invoice, invoice.stamped_xml, "xml", "application/xml")


async def invoice_pdf(request: web.Request) -> web.Response:
    invoice = await _invoice(request)
    return _download(invoice, invoice.pdf, "pdf", "application/pdf")


async def retry(request: web.Request) -> web.Response:
    invoice_id = path_int(request, "invoice_id", "No such invoice")
    await form(request)
    async with audited(request) as conn:
        invoice = await invoices.get(conn, invoice_id, for_update=True)
        if invoice is None:
            raise HtmlError(404, "No such invoice")
        if invoice.status == "cancellation_requested":
            raise HtmlError(409, "Cancellation requested: this invoice is not retried")
        if invoice.uuid is not None:
            if invoice.emailed_at is not None:
                raise HtmlError(409, "Stamped and emailed: nothing to retry")
            step, actor, args = "PDF and email", "deliver_invoice", [invoice.id]
        else:
            if invoice.status == "failed":
                await invoices.reset_refused(conn, invoice.id)
            refund = await credit_notes.refund_of(conn, invoice.id)
            if refund is not None:
                step, actor, args = "credit note", "issue_credit_note", [invoice.payment_id, refund]
            else:
                step, actor, args = "stamping", "stamp_invoice", [invoice.payment_id]
        row = await outbox.record(conn, queue=STAMPING_QUEUE, actor=actor, args=args)
    publish(request, [row])
    notice = translate(request, "Queued again: {step}").format(step=translate(request, step))
    return see_other(request, f"{ADMIN}/invoices/{invoice_id}", notice=notice)


async def cancel(request: web.Request) -> web.Response:
    """Ask the SAT to cancel a stamped invoice (`colmena invoices cancel`): checked and recorded
    under the invoice's lock, then filed with the PAC by the stamping worker."""
    invoice_id = path_int(request, "invoice_id", "No such invoice")
    posted = await form(request)
    motive = posted.get("motive", "")
    replacement = posted.get("replacement", "").strip() or None
    if motive not in MOTIVES or (replacement is not None and len(replacement) > 36):
        raise HtmlError(400, "Choose the SAT motive (and, for 01, the replacing UUID)")
    asked = confirmation(
        request,
        posted,
        message="Cancel this invoice at the SAT? Once filed it cannot be taken back.",
        cancel_to=f"{ADMIN}/invoices/{invoice_id}",
    )
    if asked is not None:
        return asked
    try:
        async with audited(request) as conn:
            await record_request(
                conn,
                invoice_id,
                motive=motive,
                replacement_uuid=replacement,
                source="operator",
                now=datetime.now(UTC),
            )
            row = await outbox.record(
                conn, queue=STAMPING_QUEUE, actor="file_cancellation", args=[invoice_id]
            )
    except CancellationRefused as refused:
        raise HtmlError(409, str(refused)) from None
    publish(request, [row])
    return see_other(
        request,
        f"{ADMIN}/invoices/{invoice_id}",
        notice=translate(request, "Cancellation requested; the stamping worker files it"),
    )
