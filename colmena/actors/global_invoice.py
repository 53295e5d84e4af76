"""The CFDI global for público en general, stamped at each period's close, exactly once.

Job `cfdi-global` (every 15 minutes, COLMENA_CFDI_GLOBAL_PERIOD daily or monthly): for the last
closed period and the one before it (so a scheduler down for a whole period still catches up),
gather the period's uninvoiced sales without an RFC into one global invoice, then seal and stamp
every global invoice not stamped yet. Why it never stamps a period twice:

- A run holds the issuer's advisory lock (`GLOBAL_LOCK_SPACE`), so two schedulers, or a
  scheduler and a test, never work on the same issuer at once; the period's row is UNIQUE.
- The row and the sales it covers are written in one transaction, with the sales' payment rows
  locked: a sale is on one global invoice at most, and a sale invoiced individually first is
  left out.
- As for an Ingreso (`colmena.actors.invoice_stamping`), the sealed XML and the PAC reference
  are stored before the first PAC call; a lost answer or a timeout is retried on the next tick
  with the same bytes and reference, and the PAC's duplicate guard answers with the stamp it
  already issued (``recovered``).
- A definite refusal (the PAC's validation codes, the CSD, the data) marks the row failed, kept
  with its code; it is not sent again.

Nothing is emailed: the receiver is the público en general. The stamped XML stays on the row.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

import asyncpg
import structlog
from apscheduler.triggers.interval import IntervalTrigger

from colmena.config.metrics import INVOICES
from colmena.domain.global_invoice import (
    GlobalInvoice,
    Period,
    Periodicity,
    global_invoice_for,
    last_closed,
)
from colmena.domain.invoicing import FiscalDataError
from colmena.errors import PermanentError
from colmena.gateways.cfdi import CfdiInvalid, CsdError, SignedInvoice, sign_global_invoice
from colmena.gateways.csd import CSD_SIGNER, CsdSigner
from colmena.gateways.pac import (
    PAC_GATEWAY,
    PacAmbiguous,
    PacGateway,
    PacRejected,
    PacUnavailable,
    check_certifies,
)
from colmena.gateways.stamping_config import StampingConfig, stamping_config
from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import scheduled
from colmena.store import global_invoices
from colmena.store.global_invoices import GLOBAL_LOCK_SPACE, GlobalInvoiceRecord
from colmena.store.locks import advisory_lock

log = structlog.get_logger(__name__)

# The periods a run opens, counted back from the last closed one.
CATCH_UP_PERIODS = 2


@dataclass(frozen=True)
class GlobalInvoicer:
    """Opens and stamps the issuer's global invoices with the process's clients."""

    pool: asyncpg.Pool
    config: StampingConfig
    signer: CsdSigner
    pac: PacGateway
    periodicity: Periodicity

    async def run(self, now: dt.datetime) -> None:
        """Open the closed periods' global invoices, then stamp every one still unstamped."""
        async with (
            self.pool.acquire() as lock_conn,
            advisory_lock(lock_conn, GLOBAL_LOCK_SPACE, self.config.issuer.rfc),
        ):
            period = last_closed(self.periodicity, now)
            periods = [period]
            while len(periods) < CATCH_UP_PERIODS:
                periods.insert(0, periods[0].previous())
            for closed in periods:
                async with self.pool.acquire() as conn, conn.transaction():
                    await global_invoices.open_period(
                        conn,
                        issuer_rfc=self.config.issuer.rfc,
                        series=self.config.series,
                        period=closed,
                    )
            async with self.pool.acquire() as conn:
                pending = await global_invoices.unstamped(conn)
            for global_invoice_id in pending:
                await self.stamp(global_invoice_id)

    async def stamp(self, global_invoice_id: int) -> None:
        """Seal (once) and stamp one global invoice; a failure is recorded on its row."""
        async with self.pool.acquire() as conn:
            record = await global_invoices.get(conn, global_invoice_id)
        if record is None:
            raise PermanentError(f"global invoice {global_invoice_id} does not exist")
        bound = log.bind(global_invoice_id=record.id, folio=record.label)
        try:
            signed_xml = record.signed_xml or await self._seal(record)
        except (CsdError, FiscalDataError, CfdiInvalid) as refusal:
            code = refusal.code if isinstance(refusal, CsdError) else "INVALID_DATA"
            await self._fail(record, code, str(refusal), final=True)
            return
        async with self.pool.acquire() as conn:
            await global_invoices.begin_attempt(conn, record.id)
        try:
            result = await asyncio.to_thread(
                self.pac.stamp, signed_xml, reference=str(record.pac_reference)
            )
            check_certifies(result, signed_xml)
        except PacRejected as refusal:
            await self._fail(record, refusal.code, str(refusal), final=True)
            return
        except (PacAmbiguous, PacUnavailable) as exc:
            # Maybe stamped: the next tick sends the same bytes and reference again.
            await self._fail(record, type(exc).__name__, str(exc), final=False)
            return
        async with self.pool.acquire() as conn:
            await global_invoices.mark_stamped(
                conn,
                record.id,
                stamped_xml=result.xml,
                uuid=result.uuid,
                fecha_timbrado=result.fecha_timbrado,
                recovered=result.recovered,
            )
        INVOICES.labels(outcome="global_recovered" if result.recovered else "global_stamped").inc()
        bound.info("global invoice stamped", uuid=result.uuid, recovered=result.recovered)

    async def _seal(self, record: GlobalInvoiceRecord) -> bytes:
        """Build and seal the period's document from the sales it covers, then keep it."""
        async with self.pool.acquire() as conn:
            sales = await global_invoices.sales_of(conn, record.id)
        document = global_invoice_for(
            sales,
            period=Period(
                Periodicity.of_code(record.periodicity), record.period_first, record.period_after
            ),
            issuer=self.config.issuer,
            series=record.series,
            folio=record.folio,
            defaults=self.config.defaults,
        )
        signed = await asyncio.to_thread(self._sign, document)
        async with self.pool.acquire() as conn:
            await global_invoices.save_signed(conn, record.id, xml=signed.xml, total=signed.total)
        return signed.xml

    def _sign(self, document: GlobalInvoice) -> SignedInvoice:
        return sign_global_invoice(document, self.signer.signer())

    async def _fail(
        self, record: GlobalInvoiceRecord, code: str, message: str, *, final: bool
    ) -> None:
        async with self.pool.acquire() as conn:
            await global_invoices.note_failure(
                conn, record.id, code=code, message=message, final=final
            )
        INVOICES.labels(outcome="global_refused" if final else "global_retried").inc()
        (log.error if final else log.warning)(
            "global invoice refused" if final else "global invoice not stamped yet: retried",
            global_invoice_id=record.id,
            folio=record.label,
            code=code,
            reason=message,
        )


@scheduled("cfdi-global", IntervalTrigger(minutes=15))
async def close_global_invoices(resources: Resources) -> None:
    """Stamp the CFDI global of each closed period (see the module docstring)."""
    settings = resources.settings
    if settings.cfdi_global_period == "off" or settings.cfdi_csd_cer_path is None:
        return
    invoicer = GlobalInvoicer(
        pool=resources.pool,
        config=stamping_config(settings),
        signer=resources.shared(CSD_SIGNER),
        pac=resources.shared(PAC_GATEWAY),
        periodicity=Periodicity(settings.cfdi_global_period),
    )
    await invoicer.run(dt.datetime.now(dt.UTC))
