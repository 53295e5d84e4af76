"""CFDI stamping actors (queue "stamping"): an approved payment with fiscal data becomes a
stamped invoice, never twice, then a filed and emailed one.

- `stamp_invoice(payment_id)`: seal and stamp (`colmena.actors.invoice_stamping` says why it
  cannot stamp twice); queues `deliver_invoice` through the outbox.
- `deliver_invoice(invoice_id)`: PDF (rendered in the worker's render processes), files and
  email, once (`colmena.actors.invoice_delivery`).
- `cancel_invoice(payment_id)`: a refund or chargeback marks the invoice for cancellation.
- job `csd-expiry`: keeps colmena_csd_days_left current and warns ahead of expiry.

Each actor reads its message, takes the process's clients from `Resources` (CSD signer, PAC
gateway, mailer, PDF renderer) and calls one function; errors carry `retryable`, which decides
between a retry and the dead letters.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import structlog
from apscheduler.triggers.interval import IntervalTrigger

from colmena.actors.invoice_delivery import deliver
from colmena.actors.invoice_stamping import QUEUE, InvoiceStamper
from colmena.config.metrics import CSD_DAYS_LEFT, INVOICES
from colmena.gateways.csd import CSD_SIGNER, read_csd_certificate
from colmena.gateways.mailer import MAILER
from colmena.gateways.pac import PAC_GATEWAY
from colmena.gateways.pdf_renderer import PDF_RENDERER
from colmena.gateways.stamping_config import csd_source, stamping_config
from colmena.runtime.registry import actor
from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import scheduled
from colmena.store import invoices

log = structlog.get_logger(__name__)


@actor(queue=QUEUE, name="stamp_invoice")
async def stamp_invoice(resources: Resources, payment_id: int) -> None:
    """Have the payment's invoice sealed and stamped; a no-op once it is."""
    stamper = InvoiceStamper(
        pool=resources.pool,
        publisher=resources.publisher,
        config=stamping_config(resources.settings),
        signer=resources.shared(CSD_SIGNER),
        pac=resources.shared(PAC_GATEWAY),
        storage=resources.settings.cfdi_storage_path,
    )
    await stamper.stamp(payment_id)


@actor(queue=QUEUE, name="deliver_invoice")
async def deliver_invoice(resources: Resources, invoice_id: int) -> None:
    """Render the PDF, file XML and PDF, and email both to the receiver, once."""
    await deliver(
        resources.pool,
        invoice_id,
        mailer=resources.shared(MAILER),
        renderer=resources.shared(PDF_RENDERER),
        storage=resources.settings.cfdi_storage_path,
        issuer_name=resources.settings.cfdi_issuer_name,
    )


@actor(queue=QUEUE, name="cancel_invoice")
async def cancel_invoice(resources: Resources, payment_id: int) -> None:
    """Mark the invoice of a refunded or charged-back payment for cancellation.

    The cancellation itself (SAT motive 02/03, the receiver's acceptance) is done by an
    operator in the PAC's portal: colmena does not call the PAC's cancellation service.
    """
    async with resources.pool.acquire() as conn, conn.transaction():
        invoice = await invoices.get_by_payment(conn, payment_id, for_update=True)
        if invoice is None:
            log.info(
                "payment reversed before any invoice existed: nothing to cancel",
                payment_id=payment_id,
            )
            return
        if invoice.status == "cancellation_requested":
            return
        await invoices.request_cancellation(conn, invoice.id)
    INVOICES.labels(outcome="cancellation_requested").inc()
    log.warning(
        "invoice cancellation requested: cancel it in the PAC's portal",
        payment_id=payment_id,
        invoice_id=invoice.id,
        uuid=invoice.uuid,
        folio=invoice.label,
    )


@scheduled("csd-expiry", IntervalTrigger(hours=6))
async def watch_csd(resources: Resources) -> None:
    """Keep colmena_csd_days_left current and warn ahead of expiry (a CSD lasts four years
    and nothing stamps without one)."""
    settings = resources.settings
    if settings.cfdi_csd_cer_path is None:
        return
    info = await asyncio.to_thread(read_csd_certificate, csd_source(settings))
    days_left = info.days_left(dt.datetime.now(dt.UTC))
    CSD_DAYS_LEFT.set(days_left)
    if days_left < settings.cfdi_csd_warn_days:
        log.warning(
            "CSD expires soon: renew it in the SAT portal",
            days_left=days_left,
            certificate_number=info.certificate_number,
            not_after=info.not_after.isoformat(),
        )
