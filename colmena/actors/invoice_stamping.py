"""Sealing and stamping one invoice, never twice: the work behind the `stamp_invoice` actor.

Why it cannot stamp twice under at-least-once messages:

- The invoice row (UNIQUE payment_id, with its folio and a random PAC reference) is created
  under the payment's row lock before anything is sealed or sent.
- The sealed XML is stored on the row before the first PAC call, and a concurrent duplicate
  that sealed its own copy throws it away and uses the stored one. Every attempt therefore
  sends the PAC the same bytes under the same reference (SW's ``customid``), and the PAC's
  duplicate guard answers a repeat with the stamp it already issued (307 / CFDI3307), which
  the gateway returns as ``recovered``. A timeout or a lost answer is thus retried by asking
  again, never by sealing a new document.
- With a failover PAC (COLMENA_PAC_FAILOVER_PROVIDER) an invoice moves to the other PAC only
  on a definite "not stamped" (5xx, no connection) and only while no earlier attempt may have
  reached the first one (a timeout, a lost answer, a worker that died mid-call): the row counts
  those attempts (migration 0020), and while any is outstanding every retry goes to that PAC,
  whose duplicate guard settles it. A lost answer is thus never answered by a second stamp
  elsewhere.
- Only a definite refusal (the PAC's validation codes, an expired CSD, unusable fiscal data)
  marks the invoice failed: the code and message are stored on the row, then the error, which
  is permanent by its class, sends the message to the dead letters. ``colmena invoices retry``
  re-seals such an invoice, which is safe because nothing was stamped.

The PDF (~0.2-0.4 s of CPU, in a render process of its own) and the email happen in
``deliver_invoice``, queued through the outbox in the transaction that records the stamp. The
stamped XML is kept on the row; a copy for the accountant is written under ``storage`` when one
is configured (`colmena.gateways.invoice_files`), and a failure to write it never holds back
the stamp.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from colmena.config.metrics import CSD_DAYS_LEFT, INVOICES
from colmena.domain.invoicing import FiscalDataError, Invoice, invoice_for, recipient_of
from colmena.errors import PermanentError
from colmena.gateways.cfdi import CfdiInvalid, CsdError, SignedInvoice, inspect_csd, sign_invoice
from colmena.gateways.csd import CsdSigner
from colmena.gateways.invoice_files import invoice_files, write_atomically
from colmena.gateways.pac import (
    PacAmbiguous,
    PacGateway,
    PacRejected,
    PacUnavailable,
    StampResult,
    check_certifies,
)
from colmena.gateways.stamping_config import StampingConfig
from colmena.runtime.outbox import publish_now
from colmena.runtime.publisher import Publisher
from colmena.store import global_invoices, invoices, outbox, payments
from colmena.store.invoices import InvoiceRecord

log = structlog.get_logger(__name__)

# The queue of the stamping actors (`colmena.actors.stamping`), where delivery is queued too.
QUEUE = "stamping"

# What ends an invoice's stamping for good; each is permanent (`retryable = False`).
Refusal = PacRejected | CsdError | FiscalDataError | CfdiInvalid


@dataclass(frozen=True)
class InvoiceStamper:
    """Stamps the invoice of one payment with the process's clients."""

    pool: asyncpg.Pool
    publisher: Publisher
    config: StampingConfig
    signer: CsdSigner
    pac: PacGateway
    storage: Path | None

    async def stamp(self, payment_id: int) -> None:
        """Have the payment's invoice sealed and stamped; a no-op once it is."""
        bound = log.bind(payment_id=payment_id)
        invoice = await self._open_invoice(payment_id)
        if invoice is None:
            bound.info("payment no longer approved and never invoiced: nothing to stamp")
            return
        bound = bound.bind(invoice_id=invoice.id, folio=invoice.label)
        if invoice.held_at is not None:
            # A dispute holds it; a won dispute releases the hold and queues the stamping again.
            bound.info("invoice held while its payment is disputed: not stamped")
            return
        if invoice.uuid is not None:
            bound.info("invoice already stamped", uuid=invoice.uuid)
            return
        if invoice.status == "failed":
            bound.info(
                "invoice was refused; `colmena invoices retry` re-seals it",
                code=invoice.failure_code,
            )
            return
        if invoice.status == "cancellation_requested" and invoice.attempts == 0:
            bound.info("payment reversed before the invoice was sent to the PAC: not stamping")
            return
        signed_xml = invoice.signed_xml or await self._seal(invoice)
        await self.stamp_sealed(invoice, signed_xml)

    async def _open_invoice(self, payment_id: int) -> InvoiceRecord | None:
        """The payment's invoice, created (with its folio) if the payment is approved and has
        none."""
        async with self.pool.acquire() as conn, conn.transaction():
            payment = await payments.get(conn, payment_id, for_update=True)
            if payment is None:
                raise PermanentError(f"payment {payment_id} does not exist")
            invoice = await invoices.get_by_payment(conn, payment_id)
            if invoice is None and await global_invoices.membership(conn, payment_id) is not None:
                # Already on a global invoice (no RFC when it closed): a second CFDI for the same
                # sale would declare its income twice.
                raise PermanentError(
                    f"payment {payment_id} is on a global invoice already; an individual one "
                    "needs the global invoice corrected first (a credit note for that sale)"
                )
            if invoice is None and payment.status == "approved":
                invoice = await invoices.create(
                    conn,
                    payment_id=payment_id,
                    issuer_rfc=self.config.issuer.rfc,
                    series=self.config.series,
                )
            return invoice

    async def _seal(self, invoice: InvoiceRecord) -> bytes:
        """Build, seal and schema-check the CFDI, then keep it on the row (or the copy a
        concurrent duplicate kept first)."""
        async with self.pool.acquire() as conn:
            payment = await payments.get(conn, invoice.payment_id)
        if payment is None:
            raise PermanentError(f"payment {invoice.payment_id} of invoice {invoice.id} is gone")
        try:
            document = invoice_for(
                payment,
                issuer=self.config.issuer,
                series=invoice.series,
                folio=invoice.folio,
                defaults=self.config.defaults,
            )
            signed = await asyncio.to_thread(self._sign, document)
        except (CsdError, FiscalDataError, CfdiInvalid) as refusal:
            await self.record_refusal(invoice, refusal)
            raise
        async with self.pool.acquire() as conn, conn.transaction():
            current = await _locked(conn, invoice.id)
            if current.signed_xml is not None:
                return current.signed_xml
            await invoices.save_signed(
                conn,
                invoice.id,
                xml=signed.xml,
                total=signed.total,
                currency=document.currency,
                receiver_rfc=document.receiver.rfc,
                receiver_email=recipient_of(payment),
            )
        return signed.xml

    def _sign(self, document: Invoice) -> SignedInvoice:
        """Blocking: load the CSD, report its days left, seal (refusing an expired or foreign
        CSD)."""
        signer = self.signer.signer()
        info = inspect_csd(signer.certificate_bytes())
        CSD_DAYS_LEFT.set(info.days_left(dt.datetime.now(dt.UTC)))
        return sign_invoice(document, signer)

    async def stamp_sealed(self, invoice: InvoiceRecord, signed_xml: bytes) -> None:
        """Have the PAC stamp these sealed bytes and record the stamp (or the refusal); credit
        notes go through here too."""
        async with self.pool.acquire() as conn:
            await invoices.begin_attempt(conn, invoice.id)
        try:
            result = await self._stamp_at_a_safe_pac(invoice, signed_xml)
            check_certifies(result, signed_xml)
        except PacRejected as refusal:
            await self.record_refusal(invoice, refusal)
            raise
        except (PacAmbiguous, PacUnavailable) as exc:
            async with self.pool.acquire() as conn:
                await invoices.note_transient(
                    conn, invoice.id, code=type(exc).__name__, message=str(exc)
                )
            INVOICES.labels(outcome="retried").inc()
            raise
        xml_path = await self._export(invoice, result)
        async with self.pool.acquire() as conn, conn.transaction():
            current = await _locked(conn, invoice.id)
            await invoices.mark_stamped(
                conn,
                invoice.id,
                stamped_xml=result.xml,
                uuid=result.uuid,
                fecha_timbrado=result.fecha_timbrado,
                recovered=result.recovered,
                xml_path=xml_path,
            )
            follow_up = None
            if current.status != "cancellation_requested":
                follow_up = await outbox.record(
                    conn,
                    queue=QUEUE,
                    actor="deliver_invoice",
                    args=[invoice.id],
                    dedupe_key=f"deliver_invoice:{invoice.id}",
                )
        await publish_now(self.pool, self.publisher, [follow_up])
        INVOICES.labels(outcome="recovered" if result.recovered else "stamped").inc()
        log.info(
            "invoice stamped", invoice_id=invoice.id, uuid=result.uuid, recovered=result.recovered
        )

    async def _stamp_at_a_safe_pac(self, invoice: InvoiceRecord, signed_xml: bytes) -> StampResult:
        """Stamp at the PAC the invoice is routed to, moving to the other one (the failover,
        or back to the primary) only on a definite "not stamped" and only when no earlier
        attempt may have reached the first: ``invoices.enter_pac``/``leave_pac`` keep that
        count under the row lock. Each PAC is tried once per attempt."""
        async with self.pool.acquire() as conn:
            provider = await invoices.enter_pac(conn, invoice.id, primary=str(self.pac.provider))
        tried: set[str] = set()
        while True:
            tried.add(provider)
            gateway = self.pac.at(provider)
            try:
                return await asyncio.to_thread(
                    gateway.stamp, signed_xml, reference=str(invoice.pac_reference)
                )
            except (PacUnavailable, PacRejected) as definite:
                other = self.pac.other_than(provider)
                switch_to = other if isinstance(definite, PacUnavailable) else None
                if switch_to in tried:
                    switch_to = None
                async with self.pool.acquire() as conn:
                    moved = await invoices.leave_pac(
                        conn, invoice.id, provider, switch_to=switch_to
                    )
                if not moved or switch_to is None:
                    raise
                INVOICES.labels(outcome="failover").inc()
                log.warning(
                    "PAC unavailable and it cannot hold this invoice's stamp: trying the other",
                    invoice_id=invoice.id,
                    unavailable=provider,
                    next=switch_to,
                    error=str(definite),
                )
                provider = switch_to

    async def _export(self, invoice: InvoiceRecord, result: StampResult) -> str | None:
        """The accountant's copy of the stamped XML, when configured: its path, or None."""
        if self.storage is None:
            return None
        files = invoice_files(
            self.storage,
            issuer_rfc=invoice.issuer_rfc,
            label=invoice.label,
            uuid=result.uuid,
            stamped_at=result.fecha_timbrado,
        )
        try:
            await asyncio.to_thread(write_atomically, files.xml, result.xml)
        except OSError as exc:
            log.error(
                "invoice XML export failed; the database keeps the XML",
                invoice_id=invoice.id,
                path=str(files.xml),
                error=str(exc),
            )
            return None
        return str(files.xml)

    async def record_refusal(self, invoice: InvoiceRecord, refusal: Refusal) -> None:
        """Keep a definite refusal on the invoice, where `colmena invoices show` reads it."""
        if isinstance(refusal, PacRejected):
            detail = f" ({refusal.detail})" if refusal.detail else ""
            source, code, message = "pac", refusal.code, refusal.message + detail
            outcome = "rejected"
        elif isinstance(refusal, CsdError):
            source, code, message, outcome = "csd", refusal.code, str(refusal), "csd_refused"
        else:
            source, code, message, outcome = "data", "INVALID_DATA", str(refusal), "invalid_data"
        async with self.pool.acquire() as conn:
            await invoices.mark_failed(conn, invoice.id, source=source, code=code, message=message)
        INVOICES.labels(outcome=outcome).inc()
        log.error(
            "invoice refused",
            invoice_id=invoice.id,
            folio=invoice.label,
            source=source,
            code=code,
            reason=message,
        )


async def _locked(conn: asyncpg.Connection, invoice_id: int) -> InvoiceRecord:
    """The invoice row, locked for the caller's transaction."""
    current = await invoices.get(conn, invoice_id, for_update=True)
    if current is None:
        raise PermanentError(f"invoice {invoice_id} does not exist")
    return current
