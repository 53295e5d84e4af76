"""Cancelling a stamped CFDI at the SAT: the work behind `cancel_invoice`, `file_cancellation`
and the `cfdi-cancellations` job (`colmena.actors.stamping`).

Three steps, each safe to repeat:

1. ``request``: in one transaction under the invoice's row lock, check the request
   (`colmena.domain.cancellation`: stamped, motive, FolioSustitucion), judge whether the
   receiver must accept (RMF 2.7.1.35) and record it. Nothing leaves colmena yet.
2. ``file``: send the PAC the CSD-signed ``Cancelacion``. A lost answer is cured by sending it
   again: the SAT answers a repeat with 202 (cancelled before), which counts as filed. A
   refusal (the PAC's or the SAT's codes) ends the cancellation as ``refused``; it is never
   sent again on its own.
3. ``poll``: ask the SAT's status service, with a doubling delay, until the answer is final
   (cancelled, expired, rejected, refused).

The job runs both on every due row, so a request whose PAC was down when it was made is filed
once the PAC is back, without a message surviving that long.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import structlog

from colmena.config.metrics import CFDI_ACCEPTANCE_OVERDUE, CFDI_CANCELLATIONS
from colmena.domain.cancellation import (
    OPEN_STATES,
    CancellationRefused,
    State,
    acceptance_deadline,
    decide,
    poll_delay,
)
from colmena.gateways.csd import CsdSigner
from colmena.gateways.pac import PacError, PacGateway, PacRejected
from colmena.gateways.sat_status import SatStatusClient, SatStatusUnavailable
from colmena.store import cancellations, invoices
from colmena.store.cancellation_requests import record_request
from colmena.store.cancellation_requests import stamped_xml_of as _stamped_xml
from colmena.store.cancellations import CancellationRecord

log = structlog.get_logger(__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Canceller:
    """Requests, files and follows cancellations with the process's clients."""

    pool: asyncpg.Pool
    pac: PacGateway
    signer: CsdSigner
    sat: SatStatusClient
    refund_motive: str = "03"
    clock: Callable[[], dt.datetime] = field(default=_now)

    async def request(
        self,
        invoice_id: int,
        *,
        motive: str,
        replacement_uuid: str | None = None,
        source: str = "operator",
    ) -> CancellationRecord:
        """Record the request; CancellationRefused (nothing changed) when it cannot be made."""
        async with self.pool.acquire() as conn, conn.transaction():
            return await record_request(
                conn,
                invoice_id,
                motive=motive,
                replacement_uuid=replacement_uuid,
                source=source,
                now=self.clock(),
            )

    async def cancel_refunded(self, payment_id: int) -> None:
        """A full refund or lost chargeback: cancel the payment's CFDI with the refund motive.

        An invoice not stamped yet is only marked, so it is never sent to the PAC; if a stamp
        arrives after all (an attempt was already on its way), the job requests it then.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            invoice = await invoices.get_by_payment(conn, payment_id, for_update=True)
            if invoice is None:
                log.info("payment reversed before any invoice existed", payment_id=payment_id)
                return
            await invoices.request_cancellation(conn, invoice.id)
            existing = await cancellations.get(conn, invoice.id)
        if invoice.uuid is None or existing is not None:
            return
        await self.request(invoice.id, motive=self.refund_motive, source="refund")
        await self.file(invoice.id)

    async def file(self, invoice_id: int) -> CancellationRecord | None:
        """Send a recorded request to the PAC; a no-op unless it is waiting to be filed.

        Raises the PAC's transient errors after noting them (the caller retries); a refusal
        is recorded and not raised, for it ends the cancellation.
        """
        async with self.pool.acquire() as conn:
            record = await cancellations.get(conn, invoice_id)
            invoice = await invoices.get(conn, invoice_id)
            if record is None or record.state is not State.REQUESTED or invoice is None:
                return record
            stamped_at = await invoices.stamping_pac(conn, invoice_id)
            await cancellations.begin_filing(conn, invoice_id)
        stamped_xml = _stamped_xml(invoice)
        bound = log.bind(invoice_id=invoice_id, uuid=invoice.uuid)
        try:
            # The PAC that stamped the CFDI cancels it (with a failover PAC, not always the first).
            pac = self.pac.at(stamped_at) if stamped_at is not None else self.pac
            signer = await asyncio.to_thread(self.signer.signer)
            filed = await asyncio.to_thread(
                pac.cancel,
                stamped_xml,
                motive=record.motive,
                replacement_uuid=record.replacement_uuid,
                signer=signer,
            )
        except PacRejected as refusal:
            async with self.pool.acquire() as conn:
                await cancellations.mark_refused(
                    conn, invoice_id, code=refusal.code, message=refusal.message
                )
            CFDI_CANCELLATIONS.labels(outcome="refused").inc()
            bound.warning("cfdi cancellation refused", code=refusal.code, detail=refusal.message)
            return await self._reread(invoice_id)
        except PacError as exc:
            async with self.pool.acquire() as conn:
                await cancellations.note_error(
                    conn,
                    invoice_id,
                    message=f"PAC: {exc}",
                    next_poll_at=self.clock() + poll_delay(record.request_attempts),
                )
            CFDI_CANCELLATIONS.labels(outcome="pac_unavailable").inc()
            raise
        async with self.pool.acquire() as conn:
            await cancellations.mark_filed(
                conn, invoice_id, code=filed.code, acuse=filed.acuse, next_poll_at=self.clock()
            )
        CFDI_CANCELLATIONS.labels(outcome="filed").inc()
        bound.info("cfdi cancellation filed", code=filed.code)
        return await self._reread(invoice_id)

    async def poll(self, invoice_id: int) -> CancellationRecord | None:
        """Ask the SAT what became of a filed cancellation and move it accordingly."""
        async with self.pool.acquire() as conn:
            record = await cancellations.get(conn, invoice_id)
            invoice = await invoices.get(conn, invoice_id)
        if record is None or invoice is None or record.state not in OPEN_STATES:
            return record
        stamped_xml = _stamped_xml(invoice)
        next_poll_at = self.clock() + poll_delay(record.polls)
        try:
            status = await asyncio.to_thread(self.sat.status, stamped_xml)
        except SatStatusUnavailable as exc:
            async with self.pool.acquire() as conn:
                await cancellations.note_error(
                    conn, invoice_id, message=f"SAT status: {exc}", next_poll_at=next_poll_at
                )
            CFDI_CANCELLATIONS.labels(outcome="status_unavailable").inc()
            return await self._reread(invoice_id)
        decision = decide(record.state, status)
        async with self.pool.acquire() as conn:
            await cancellations.record_status(
                conn,
                invoice_id,
                state=decision.state,
                status=status,
                next_poll_at=next_poll_at,
                reason=decision.reason,
            )
        if decision.state is not record.state:
            if decision.state not in OPEN_STATES:
                CFDI_CANCELLATIONS.labels(outcome=str(decision.state)).inc()
            log.info(
                "cfdi cancellation moved",
                invoice_id=invoice_id,
                uuid=invoice.uuid,
                state=str(decision.state),
                was=str(record.state),
                reason=decision.reason,
            )
        return await self._reread(invoice_id)

    async def tick(self) -> int:
        """One pass of the job: request the CFDI of refunds stamped late, file or poll every
        due cancellation, and refresh the overdue-acceptance gauge. How many it handled."""
        async with self.pool.acquire() as conn:
            late = await cancellations.stamped_after_refund(conn)
        for invoice_id in late:
            try:
                await self.request(invoice_id, motive=self.refund_motive, source="refund")
            except CancellationRefused as refused:
                log.warning("cannot request cancellation", invoice_id=invoice_id, why=str(refused))
        async with self.pool.acquire() as conn:
            due = await cancellations.due(conn, now=self.clock())
        for invoice_id in due:
            record = await self._reread(invoice_id)
            if record is None:
                continue
            if record.state is State.REQUESTED:
                try:
                    await self.file(invoice_id)
                except PacError:
                    continue  # noted on the row, with the time of its next attempt
            else:
                await self.poll(invoice_id)
        await self.refresh_overdue()
        return len(due)

    async def refresh_overdue(self) -> int:
        """Set colmena_cfdi_acceptance_overdue: receivers past their three business days."""
        async with self.pool.acquire() as conn:
            waiting = await cancellations.awaiting_acceptance_since(conn)
        now = self.clock()
        overdue = sum(1 for requested_at in waiting if now > acceptance_deadline(requested_at))
        CFDI_ACCEPTANCE_OVERDUE.set(overdue)
        return overdue

    async def _reread(self, invoice_id: int) -> CancellationRecord | None:
        async with self.pool.acquire() as conn:
            return await cancellations.get(conn, invoice_id)
