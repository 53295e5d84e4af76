"""Credit notes (queue "stamping"): a refund on an invoiced payment becomes a stamped CFDI de
Egreso, once per cumulative refund, filed and emailed like the invoice it credits.

- `issue_credit_note(payment_id, refunded_minor)`: queued by `colmena.actors.payments` for every
  refund it reads (partial or whole), `refunded_minor` being the payment's cumulative refund.

Why it never credits twice, nor more than was billed: under the payment's row lock the refund
is compared with what the payment's notes already cover (`colmena.domain.credit_notes`), and
the note's row (UNIQUE payment + cumulative refund, with its folio and a random PAC reference)
is created before anything is sealed. From there the note is an invoice row like any other:
sealed once and kept, then stamped by `InvoiceStamper`'s PAC path (a lost answer comes back as
the stamp already issued), which queues `deliver_invoice` for the PDF, the files and the email.

A refund that arrives before the CFDI it credits is stamped is kept in `deferred_credit_notes`
(not in the message's retries, which could run out first); job `credit-notes-deferred` queues it
again once that CFDI is stamped.

A whole refund under COLMENA_CFDI_FULL_REFUND=cancel with nothing credited yet queues
`cancel_invoice` instead, through the outbox, in the transaction that decided it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import structlog
from apscheduler.triggers.interval import IntervalTrigger

from colmena.actors.invoice_stamping import QUEUE, InvoiceStamper
from colmena.domain.credit_notes import CreditNote, FullRefund, credit_note_for, decide_refund
from colmena.domain.invoicing import FiscalDataError
from colmena.domain.money import exponent, from_minor
from colmena.errors import ColmenaError, PermanentError
from colmena.gateways.cfdi import (
    CfdiInvalid,
    CsdError,
    SignedInvoice,
    sign_credit_note,
    stamped_terms,
)
from colmena.gateways.csd import CSD_SIGNER
from colmena.gateways.pac import PAC_GATEWAY
from colmena.gateways.stamping_config import stamping_config
from colmena.runtime.outbox import publish_now
from colmena.runtime.registry import actor
from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import scheduled
from colmena.store import credit_notes, global_invoices, invoices, outbox, payments
from colmena.store.invoices import InvoiceRecord
from colmena.store.outbox import OutboxMessage
from colmena.store.payments import Payment

log = structlog.get_logger(__name__)

RESUME_BATCH = 100


class OriginalNotStamped(ColmenaError):
    """The CFDI the refund credits is not stamped yet (an Egreso needs the UUID it relates to):
    the refund is deferred until it is."""


@dataclass(frozen=True)
class Credited:
    """The stamped CFDI that billed a payment: its own Ingreso or the CFDI global."""

    uuid: str
    stamped_xml: bytes


@dataclass(frozen=True)
class CreditNoteIssuer:
    """Issues the credit notes of one payment's refunds with the process's clients."""

    stamper: InvoiceStamper
    series: str
    full_refund: FullRefund
    # Whether sales without an RFC are gathered into a CFDI global (COLMENA_CFDI_GLOBAL_PERIOD).
    gathers_globals: bool

    async def credit(self, payment_id: int, refunded_minor: int) -> None:
        """Credit the payment's cumulative refund `refunded_minor` (or cancel, per policy)."""
        pool = self.stamper.pool
        try:
            async with pool.acquire() as conn, conn.transaction():
                note, follow_up = await self._open(conn, payment_id, refunded_minor)
        except OriginalNotStamped as waiting:
            async with pool.acquire() as conn:
                await credit_notes.defer(conn, payment_id, refunded_minor)
            log.info("refund deferred until its CFDI is stamped", reason=str(waiting))
            return
        if follow_up is not None:
            await publish_now(pool, self.stamper.publisher, [follow_up])
            log.info("whole refund: invoice cancellation queued", payment_id=payment_id)
            return
        if note is None:
            return
        bound = log.bind(payment_id=payment_id, invoice_id=note.id, folio=note.label)
        if note.uuid is not None:
            bound.info("credit note already stamped", uuid=note.uuid)
            return
        if note.status == "failed":
            bound.info("credit note was refused; `colmena invoices retry` re-seals it")
            return
        signed_xml = note.signed_xml or await self._seal(note)
        await self.stamper.stamp_sealed(note, signed_xml)

    async def _open(
        self, conn: asyncpg.Connection, payment_id: int, refunded_minor: int
    ) -> tuple[InvoiceRecord | None, OutboxMessage | None]:
        """Under the payment's lock: the note for this refund (created if due), or the
        cancellation to queue instead. A refused refund raises and changes nothing."""
        payment = await payments.get(conn, payment_id, for_update=True)
        if payment is None:
            raise PermanentError(f"payment {payment_id} does not exist")
        existing = await credit_notes.for_refund(conn, payment_id, refunded_minor)
        if existing is not None:
            return existing, None
        credited = await _credited(conn, payment, gathers_globals=self.gathers_globals)
        if credited is None:
            return None, None
        decision = decide_refund(
            billed_minor=payment.amount_minor,
            credited_minor=await credit_notes.credited_through(conn, payment_id),
            refunded_minor=refunded_minor,
            policy=self.full_refund,
        )
        if decision.cancel:
            return None, await outbox.record(
                conn,
                queue=QUEUE,
                actor="cancel_invoice",
                args=[payment_id],
                dedupe_key=f"cancel_invoice:{payment_id}",
            )
        if decision.credit_minor == 0:
            log.info("refund already credited", payment_id=payment_id, refunded=refunded_minor)
            return None, None
        note = await credit_notes.create(
            conn,
            payment_id=payment_id,
            issuer_rfc=self.stamper.config.issuer.rfc,
            series=self.series,
            related_uuid=credited.uuid,
            refunded_through_minor=refunded_minor,
            credit=from_minor(decision.credit_minor, payment.currency.upper()),
        )
        log.info(
            "credit note opened",
            payment_id=payment_id,
            invoice_id=note.id,
            related_uuid=credited.uuid,
            credit_minor=decision.credit_minor,
        )
        return note, None

    async def _seal(self, note: InvoiceRecord) -> bytes:
        """Build, seal and schema-check the Egreso, then keep it on the row (or the copy a
        concurrent duplicate kept first)."""
        async with self.stamper.pool.acquire() as conn:
            payment = await payments.get(conn, note.payment_id)
            credited = (
                await _credited(conn, payment, gathers_globals=self.gathers_globals)
                if payment is not None
                else None
            )
        if payment is None or credited is None or note.total is None:
            raise PermanentError(f"credit note {note.id} lost its payment or credited CFDI")
        try:
            document = self._document(note, note.total, payment, credited)
            signed = await asyncio.to_thread(self._sign, document)
        except (CsdError, FiscalDataError, CfdiInvalid) as refusal:
            await self.stamper.record_refusal(note, refusal)
            raise
        async with self.stamper.pool.acquire() as conn, conn.transaction():
            current = await invoices.get(conn, note.id, for_update=True)
            if current is None:
                raise PermanentError(f"credit note {note.id} does not exist")
            if current.signed_xml is not None:
                return current.signed_xml
            await invoices.save_signed(
                conn,
                note.id,
                xml=signed.xml,
                total=signed.total,
                currency=document.invoice.currency,
                receiver_rfc=document.invoice.receiver.rfc,
                receiver_email=payment.customer_email or payment.metadata.get("email"),
            )
        return signed.xml

    def _document(
        self, note: InvoiceRecord, total: Decimal, payment: Payment, credited: Credited
    ) -> CreditNote:
        """The Egreso for the note's row: its amount, folio and the credited CFDI's terms."""
        config = self.stamper.config
        terms = stamped_terms(credited.stamped_xml)
        return credit_note_for(
            payment,
            amount_minor=int(total.scaleb(exponent(payment.currency.upper()))),
            related_uuid=credited.uuid,
            receiver=terms.receiver,
            payment_form=terms.payment_form,
            issuer=config.issuer,
            series=note.series,
            folio=note.folio,
            defaults=config.defaults,
        )

    def _sign(self, note: CreditNote) -> SignedInvoice:
        """Blocking: load the CSD and seal (refusing an expired or foreign CSD)."""
        return sign_credit_note(note, self.stamper.signer.signer())


async def _credited(
    conn: asyncpg.Connection, payment: Payment, *, gathers_globals: bool
) -> Credited | None:
    """The stamped CFDI that billed the payment; None when no CFDI ever will (no RFC and no
    CFDI global covers it, or will). Raises while the CFDI is on its way, or when it never was
    issued."""
    invoice = await invoices.get_by_payment(conn, payment.id)
    if invoice is not None:
        if invoice.uuid is not None and invoice.stamped_xml is not None:
            return Credited(uuid=invoice.uuid, stamped_xml=invoice.stamped_xml)
        if invoice.status == "failed":
            raise PermanentError(
                f"invoice {invoice.id} of payment {payment.id} was refused, never stamped: "
                "there is nothing to credit (fix and retry it first)"
            )
        raise OriginalNotStamped(f"invoice {invoice.id} of payment {payment.id} is not stamped")
    membership = await global_invoices.membership(conn, payment.id)
    if membership is not None:
        covering = await global_invoices.get(conn, membership.global_invoice_id)
        if covering is not None and covering.uuid and covering.stamped_xml:
            return Credited(uuid=covering.uuid, stamped_xml=covering.stamped_xml)
        raise OriginalNotStamped(f"the CFDI global covering payment {payment.id} is not stamped")
    if payment.metadata.get("rfc"):
        raise OriginalNotStamped(f"payment {payment.id} is not invoiced yet")
    if gathers_globals and payment.currency.lower() == "mxn" and payment.status == "approved":
        # Partly refunded before its period closed: the CFDI global will bill it in full, and
        # this refund is credited against that one once it is stamped.
        raise OriginalNotStamped(f"the CFDI global of payment {payment.id} is not stamped yet")
    log.info("refund of a payment no CFDI covers: nothing to credit", payment_id=payment.id)
    return None


@scheduled("credit-notes-deferred", IntervalTrigger(minutes=1))
async def resume_deferred_credit_notes(resources: Resources) -> None:
    """Queue again the refunds whose credited CFDI has been stamped since they arrived."""
    async with resources.pool.acquire() as conn, conn.transaction():
        ready = await credit_notes.take_ready(conn, limit=RESUME_BATCH)
        rows = [
            await outbox.record(
                conn,
                queue=QUEUE,
                actor="issue_credit_note",
                args=[payment_id, refunded_minor],
                dedupe_key=f"issue_credit_note:{payment_id}:{refunded_minor}:resumed",
            )
            for payment_id, refunded_minor in ready
        ]
    await publish_now(resources.pool, resources.publisher, rows)
    if ready:
        log.info("deferred refunds queued again", count=len(ready))


@actor(queue=QUEUE, name="issue_credit_note")
async def issue_credit_note(resources: Resources, payment_id: int, refunded_minor: int) -> None:
    """Credit the payment's cumulative refund with a CFDI de Egreso, once."""
    settings = resources.settings
    stamper = InvoiceStamper(
        pool=resources.pool,
        publisher=resources.publisher,
        config=stamping_config(settings),
        signer=resources.shared(CSD_SIGNER),
        pac=resources.shared(PAC_GATEWAY),
        storage=settings.cfdi_storage_path,
    )
    issuer = CreditNoteIssuer(
        stamper=stamper,
        series=settings.cfdi_credit_note_series,
        full_refund=FullRefund(settings.cfdi_full_refund),
        gathers_globals=settings.cfdi_global_period != "off",
    )
    await issuer.credit(payment_id, refunded_minor)
