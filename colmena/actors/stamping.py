"""CFDI stamping actors (queue "stamping"): an approved payment with fiscal data becomes a
stamped invoice, never twice, then a filed and emailed one.

- `stamp_invoice(payment_id)`: seal and stamp (`colmena.actors.invoice_stamping` says why it
  cannot stamp twice); queues `deliver_invoice` through the outbox.
- `deliver_invoice(invoice_id)`: PDF (rendered in the worker's render processes), files and
  email, once (`colmena.actors.invoice_delivery`).
- `cancel_invoice(payment_id)`: a refund or chargeback cancels the CFDI at the SAT;
  `file_cancellation(invoice_id)` files an operator's request (`colmena invoices cancel`).
- job `cfdi-cancellations`: files what could not be filed yet and follows every filed
  cancellation through the SAT's status service (`colmena.actors.invoice_cancellation`).
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

from colmena.actors.invoice_cancellation import Canceller
from colmena.actors.invoice_delivery import deliver
from colmena.actors.invoice_stamping import QUEUE, InvoiceStamper
from colmena.config.metrics import CSD_DAYS_LEFT
from colmena.gateways.csd import CSD_SIGNER, read_csd_certificate
from colmena.gateways.mailer import MAILER
from colmena.gateways.pac import PAC_GATEWAY
from colmena.gateways.pdf_renderer import PDF_RENDERER
from colmena.gateways.sat_status import SAT_STATUS
from colmena.gateways.stamping_config import csd_source, stamping_config
from colmena.runtime.registry import actor
from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import scheduled

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


def _canceller(resources: Resources) -> Canceller:
    return Canceller(
        pool=resources.pool,
        pac=resources.shared(PAC_GATEWAY),
        signer=resources.shared(CSD_SIGNER),
        sat=resources.shared(SAT_STATUS),
        refund_motive=resources.settings.cfdi_refund_cancel_motive,
    )


@actor(queue=QUEUE, name="cancel_invoice")
async def cancel_invoice(resources: Resources, payment_id: int) -> None:
    """Cancel the CFDI of a refunded or charged-back payment at the SAT (motive
    COLMENA_CFDI_REFUND_CANCEL_MOTIVE); an invoice not stamped yet is never stamped."""
    await _canceller(resources).cancel_refunded(payment_id)


@actor(queue=QUEUE, name="file_cancellation")
async def file_cancellation(resources: Resources, invoice_id: int) -> None:
    """File a recorded cancellation (`colmena invoices cancel`) with the PAC."""
    await _canceller(resources).file(invoice_id)


@scheduled("cfdi-cancellations", IntervalTrigger(minutes=5))
async def follow_cancellations(resources: Resources) -> None:
    """File what the PAC could not take before, ask the SAT what became of every filed
    cancellation (each on its own doubling delay), and refresh colmena_cfdi_acceptance_overdue."""
    await _canceller(resources).tick()


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
