"""The CFDI global for público en general: periods, the document, and stamping each period
exactly once on PostgreSQL with the SW stand-in PAC (duplicate runs, a lost answer, a refusal)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from lxml import etree
from satcfdi.models import Signer

from colmena.actors.credit_notes import resume_deferred_credit_notes
from colmena.actors.global_invoice import GlobalInvoicer, close_global_invoices
from colmena.actors.invoice_stamping import InvoiceStamper
from colmena.config import Settings
from colmena.domain.global_invoice import (
    GENERIC_RFC,
    Periodicity,
    Sale,
    global_invoice_for,
    last_closed,
    period_containing,
)
from colmena.domain.invoicing import ConceptDefaults, FiscalDataError, Issuer
from colmena.errors import PermanentError
from colmena.gateways.cfdi import TFD, load_signer, sign_global_invoice, validate_xml
from colmena.gateways.csd import CSD_SIGNER
from colmena.gateways.pac import PAC_GATEWAY
from colmena.gateways.stamping_config import stamping_config
from colmena.runtime.publisher import LeaveToRelay
from colmena.store import credit_notes, global_invoices, invoices
from colmena.store.global_invoices import GlobalInvoiceRecord
from colmena.store.pool import create_pool
from tests.bots_support import resources_for
from tests.conftest import queue_counts, wait_for
from tests.standins.csd import ISSUER_NAME, ISSUER_RFC, RECEIVER_RFC, CsdFiles
from tests.standins.pac import StandInSW
from tests.test_stamping import ca, configure, csd, sat_files, smtp  # noqa: F401

CFDI = "{http://www.sat.gob.mx/cfd/4}"
ISSUER = Issuer(rfc=ISSUER_RFC, name=ISSUER_NAME, regime="601", postal_code="42501")
DEFAULTS = ConceptDefaults(
    product_key="81112100", unit_key="E48", payment_form="04", iva_rate=Decimal("0.16")
)


def sale(ref: str, amount_minor: int, payment_form: str | None = None) -> Sale:
    metadata = {"payment_form": payment_form} if payment_form else {}
    return SimpleNamespace(  # type: ignore[return-value]
        provider_payment_id=ref,
        amount_minor=amount_minor,
        currency="mxn",
        customer_email=None,
        product_ref="colmena-pro",
        product_kind="license",
        metadata=metadata,
    )


# -- periods and the document (no services) --------------------------------------------------


def test_last_closed_day_and_month_follow_mexico_citys_calendar() -> None:
    # 05:30 UTC on 1 March is still 28 February in Mexico City (UTC-6).
    early = dt.datetime(2026, 3, 1, 5, 30, tzinfo=dt.UTC)
    day = last_closed(Periodicity.DAILY, early)
    assert (day.first, day.after) == (dt.date(2026, 2, 27), dt.date(2026, 2, 28))
    assert day.starts_at == dt.datetime(2026, 2, 27, 6, tzinfo=dt.UTC)
    assert (day.months, day.year) == ("02", 2026)

    new_year = dt.datetime(2026, 1, 1, 7, tzinfo=dt.UTC)  # 01:00 on 1 January there
    month = last_closed(Periodicity.MONTHLY, new_year)
    assert (month.first, month.after) == (dt.date(2025, 12, 1), dt.date(2026, 1, 1))
    assert (month.months, month.year, month.periodicity.code) == ("12", 2025, "04")
    assert month.previous() == period_containing(Periodicity.MONTHLY, dt.date(2025, 11, 30))
    with pytest.raises(ValueError, match="timezone-aware"):
        last_closed(Periodicity.DAILY, dt.datetime(2026, 1, 1))


def test_global_invoice_has_one_sale_concept_each_and_the_largest_payment_form() -> None:
    period = period_containing(Periodicity.DAILY, dt.date(2026, 5, 4))
    document = global_invoice_for(
        [sale("pi_1", 11_600, "04"), sale("pi_2", 5_000, "03"), sale("pi_3", 7_000, "03")],
        period=period,
        issuer=ISSUER,
        series="A",
        folio=7,
        defaults=DEFAULTS,
    )
    invoice = document.invoice
    assert (document.periodicity, document.months, document.year) == ("01", "05", 2026)
    assert invoice.receiver.rfc == GENERIC_RFC and invoice.receiver.postal_code == "42501"
    assert (invoice.receiver.regime, invoice.receiver.cfdi_use) == ("616", "S01")
    assert invoice.payment_form == "03"  # 120.00 by transfer beats 116.00 by card
    assert [c.sku for c in invoice.concepts] == ["pi_1", "pi_2", "pi_3"]
    assert invoice.concepts[0].unit_price + invoice.concepts[0].iva_amount == Decimal("116.00")
    assert {(c.product_key, c.unit_key, c.description) for c in invoice.concepts} == {
        ("01010101", "ACT", "Venta")
    }
    with pytest.raises(FiscalDataError, match="at least one sale"):
        global_invoice_for([], period=period, issuer=ISSUER, series="A", folio=8, defaults=DEFAULTS)


def test_sealed_global_invoice_validates_against_the_sat_schemas(csd: CsdFiles) -> None:  # noqa: F811
    signer = load_signer(csd.certificate, csd.key, csd.password)
    period = period_containing(Periodicity.MONTHLY, dt.date.today())
    sales = [sale(f"pi_{n}", 9_999 + n * 1_234) for n in range(5)]
    signed = sign_global_invoice(
        global_invoice_for(
            sales, period=period, issuer=ISSUER, series="A", folio=1, defaults=DEFAULTS
        ),
        signer,
    )
    validate_xml(signed.xml)
    root = etree.fromstring(signed.xml)
    info = root.find(f"{CFDI}InformacionGlobal")
    assert info is not None and info.attrib == {
        "Periodicidad": "04",
        "Meses": f"{period.first.month:02d}",
        "Año": str(period.year),
    }
    receptor = root.find(f"{CFDI}Receptor")
    assert receptor is not None and receptor.attrib["Nombre"] == "PUBLICO EN GENERAL"
    assert receptor.attrib["DomicilioFiscalReceptor"] == root.attrib["LugarExpedicion"]
    concepts = root.findall(f"{CFDI}Conceptos/{CFDI}Concepto")
    assert [c.attrib["NoIdentificacion"] for c in concepts] == [
        s.provider_payment_id for s in sales
    ]
    assert Decimal(root.attrib["Total"]) == sum(Decimal(s.amount_minor) / 100 for s in sales)


# -- stamping on the real services -----------------------------------------------------------


@pytest.fixture
async def pac(sat_files: CsdFiles) -> AsyncIterator[StandInSW]:  # noqa: F811
    """SW's stand-in; the SAT's list of registered RFCs holds the generic RFC."""
    signer: Signer = load_signer(sat_files.certificate, sat_files.key, sat_files.password)
    stand_in = StandInSW(sat_signer=signer, registered_rfcs={ISSUER_RFC, GENERIC_RFC})
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, max_size=6)
    yield pool
    await pool.close()


@pytest.fixture
def invoicer(
    pool: asyncpg.Pool,
    configure: Callable[..., Settings],  # noqa: F811
) -> Callable[..., GlobalInvoicer]:
    def make(periodicity: Periodicity = Periodicity.DAILY) -> GlobalInvoicer:
        settings = configure()
        return GlobalInvoicer(
            pool=pool,
            config=stamping_config(settings),
            signer=CSD_SIGNER.create(settings),
            pac=PAC_GATEWAY.create(settings),
            periodicity=periodicity,
        )

    return make


async def insert_sale(
    db: asyncpg.Connection,
    approved_at: dt.datetime,
    *,
    amount_minor: int = 23_200,
    status: str = "approved",
    currency: str = "mxn",
    **metadata: str,
) -> int:
    return await db.fetchval(
        """
        INSERT INTO payments (provider, provider_payment_id, amount_minor, currency, product_ref,
            product_kind, metadata, status, status_at, approved_at)
        VALUES ('stripe', $1, $2, $3, 'colmena-pro', 'license', $4, $5, $6, $6)
        RETURNING id
        """,
        f"pi_{os.urandom(6).hex()}",
        amount_minor,
        currency,
        metadata,
        status,
        approved_at,
    )


async def all_globals(db: asyncpg.Connection) -> list[GlobalInvoiceRecord]:
    ids = await db.fetch("SELECT id FROM global_invoices ORDER BY period_first")
    found = [await global_invoices.get(db, row["id"]) for row in ids]
    return [record for record in found if record is not None]


async def covered(db: asyncpg.Connection, global_invoice_id: int) -> list[int]:
    return [sale.id for sale in await global_invoices.sales_of(db, global_invoice_id)]


NOW = dt.datetime.now(dt.UTC)
YESTERDAY = last_closed(Periodicity.DAILY, NOW)


def during(period_start: dt.datetime, hours: float) -> dt.datetime:
    return period_start + dt.timedelta(hours=hours)


async def test_closed_days_are_stamped_once_with_only_their_uninvoiced_public_sales(
    db: asyncpg.Connection, invoicer: Callable[..., GlobalInvoicer], pac: StandInSW
) -> None:
    start = YESTERDAY.starts_at
    first = await insert_sale(db, during(start, 1), amount_minor=11_600)
    second = await insert_sale(db, during(start, 23.5), amount_minor=49_999, payment_form="03")
    await insert_sale(db, during(start, 2), rfc=RECEIVER_RFC)  # asked for its own invoice
    later_invoiced = await insert_sale(db, during(start, 3))
    await invoices.create(db, payment_id=later_invoiced, issuer_rfc=ISSUER_RFC, series="A")
    await insert_sale(db, during(start, 4), status="refunded")
    await insert_sale(db, during(start, 5), currency="usd")
    await insert_sale(db, during(start, 24.5))  # today: its day has not closed
    day_before = await insert_sale(db, during(YESTERDAY.previous().starts_at, 12))

    await asyncio.gather(invoicer().run(NOW), invoicer().run(NOW))  # two schedulers at once
    await invoicer().run(NOW)  # and a later tick

    older, newer = await all_globals(db)
    assert (older.period_first, newer.period_first) == (YESTERDAY.previous().first, YESTERDAY.first)
    assert await covered(db, older.id) == [day_before]
    assert await covered(db, newer.id) == [first, second]
    assert {older.status, newer.status} == {"stamped"} and sorted(pac.stamps) == sorted(
        [older.uuid, newer.uuid]
    )
    assert [kind for kind, _ in pac.received].count("stamp") == 2
    assert newer.attempts == 1 and not newer.recovered
    # Folios come from the issuer's one counter (the individual invoice took 1).
    assert sorted([older.folio, newer.folio]) == [2, 3]

    assert newer.stamped_xml is not None
    validate_xml(newer.stamped_xml)
    root = etree.fromstring(newer.stamped_xml)
    tfd = root.find(f".//{TFD}")
    assert tfd is not None and tfd.attrib["UUID"] == newer.uuid
    assert root.find(f"{CFDI}Receptor").attrib["Rfc"] == GENERIC_RFC  # type: ignore[union-attr]
    assert root.attrib["FormaPago"] == "03"
    assert Decimal(root.attrib["Total"]) == Decimal("615.99") == newer.total


async def test_a_sale_on_a_global_invoice_gets_no_individual_one_later(
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    invoicer: Callable[..., GlobalInvoicer],
    configure: Callable[..., Settings],  # noqa: F811
    pac: StandInSW,
) -> None:
    """An operator adds an RFC to an old sale and asks for its invoice: the sale's income is on
    the global invoice already, so a second CFDI is refused, not stamped."""
    sale = await insert_sale(db, during(YESTERDAY.starts_at, 1))
    await invoicer().run(NOW)
    settings = configure()
    stamper = InvoiceStamper(
        pool=pool,
        publisher=LeaveToRelay(),
        config=stamping_config(settings),
        signer=CSD_SIGNER.create(settings),
        pac=PAC_GATEWAY.create(settings),
        storage=None,
    )
    with pytest.raises(PermanentError, match="on a global invoice already"):
        await stamper.stamp(sale)
    assert await invoices.get_by_payment(db, sale) is None
    assert [kind for kind, _ in pac.received].count("stamp") == 1  # the global invoice alone


async def test_lost_answer_is_recovered_on_the_next_tick_not_stamped_again(
    db: asyncpg.Connection, invoicer: Callable[..., GlobalInvoicer], pac: StandInSW
) -> None:
    await insert_sale(db, during(YESTERDAY.starts_at, 10))
    pac.drop_next = 1

    await invoicer().run(NOW)
    [record] = await all_globals(db)
    assert record.status == "stamping" and record.uuid is None
    assert record.failure_code == "PacAmbiguous" and len(pac.stamps) == 1

    await invoicer().run(NOW)
    [record] = await all_globals(db)
    assert record.status == "stamped" and record.recovered and record.attempts == 2
    assert list(pac.stamps) == [record.uuid] and record.failure_code is None
    customids = [customid for kind, customid in pac.received if kind == "stamp"]
    assert customids == [str(record.pac_reference)] * 2


async def test_refusal_is_kept_and_never_sent_again(
    db: asyncpg.Connection, invoicer: Callable[..., GlobalInvoicer], pac: StandInSW
) -> None:
    pac.registered_rfcs = {ISSUER_RFC}  # a PAC that does not know the generic RFC
    await insert_sale(db, during(YESTERDAY.starts_at, 10))

    await invoicer().run(NOW)
    await invoicer().run(NOW)

    [record] = await all_globals(db)
    assert record.status == "failed" and record.failure_code == "CFDI40143"
    assert record.attempts == 1 and pac.stamps == {}


async def test_monthly_period_gathers_the_whole_month(
    db: asyncpg.Connection, invoicer: Callable[..., GlobalInvoicer], pac: StandInSW
) -> None:
    month = last_closed(Periodicity.MONTHLY, NOW)
    ids = [
        await insert_sale(db, month.starts_at + dt.timedelta(minutes=1)),
        await insert_sale(db, month.ends_at - dt.timedelta(minutes=1)),
    ]
    await insert_sale(db, month.ends_at)  # the next month's first minute

    await invoicer(Periodicity.MONTHLY).run(NOW)

    [record] = [r for r in await all_globals(db) if r.period_first == month.first]
    assert record.periodicity == "04" and record.status == "stamped"
    assert await covered(db, record.id) == ids
    info = etree.fromstring(record.stamped_xml or b"").find(f"{CFDI}InformacionGlobal")
    assert info is not None and info.attrib["Meses"] == month.months


@pytest.mark.parametrize("period", ["off", "daily"])
async def test_scheduled_job_follows_the_setting(
    period: str,
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    configure: Callable[..., Settings],  # noqa: F811
    pac: StandInSW,
) -> None:
    await insert_sale(db, during(YESTERDAY.starts_at, 10))
    settings = configure(cfdi_global_period=period)

    def shared(key: Any) -> Any:
        return key.create(settings)

    await close_global_invoices(SimpleNamespace(settings=settings, pool=pool, shared=shared))  # type: ignore[arg-type]

    stamped = await db.fetchval("SELECT count(*) FROM global_invoices WHERE status = 'stamped'")
    assert stamped == (0 if period == "off" else 1)
    assert len(pac.stamps) == stamped


async def test_refund_after_the_global_invoice_is_credited_by_an_egreso_against_it(
    db: asyncpg.Connection,
    invoicer: Callable[..., GlobalInvoicer],
    configure: Callable[..., Settings],  # noqa: F811
    start_worker: Callable[..., Any],
    pac: StandInSW,
) -> None:
    refunded = await insert_sale(db, during(YESTERDAY.starts_at, 9), amount_minor=34_800)
    kept = await insert_sale(db, during(YESTERDAY.starts_at, 10))
    await invoicer().run(NOW)
    [covering] = await all_globals(db)
    assert covering.uuid is not None and await covered(db, covering.id) == [refunded, kept]

    system = start_worker(settings_override=configure(), queues=["stamping"])
    system.broker.get_actor("issue_credit_note").send(refunded, 10_000)

    async def stamped_note() -> Any:
        notes = await credit_notes.of_payment(db, refunded)
        return notes[0] if notes and notes[0].stamped_xml is not None else None

    note = await wait_for(stamped_note, timeout=30)
    assert note.total == Decimal("100.00")
    validate_xml(note.stamped_xml)
    root = etree.fromstring(note.stamped_xml)
    assert root.attrib["TipoDeComprobante"] == "E"
    related = root.find(f"{CFDI}CfdiRelacionados")
    assert related is not None and related.attrib["TipoRelacion"] == "01"
    assert [r.attrib["UUID"] for r in related] == [covering.uuid]
    receptor = root.find(f"{CFDI}Receptor")
    assert receptor is not None and receptor.attrib["Rfc"] == GENERIC_RFC
    assert receptor.attrib["UsoCFDI"] == "S01"
    assert await credit_notes.of_payment(db, kept) == []

    # Público en general has no address: the note is filed (its PDF kept), not emailed, and
    # nothing is dead-lettered for the want of one.
    async def filed() -> Any:
        current = await invoices.get(db, note.id)
        return current if current is not None and current.pdf is not None else None

    kept_note = await wait_for(filed, timeout=60)
    assert kept_note.emailed_at is None
    assert queue_counts(system.resources.settings.queue_prefix + "stamping")[2] == 0


async def test_a_refund_before_the_period_closes_is_credited_against_the_global_invoice(
    db: asyncpg.Connection,
    invoicer: Callable[..., GlobalInvoicer],
    configure: Callable[..., Settings],  # noqa: F811
    start_worker: Callable[..., Any],
) -> None:
    """Partly refunded before the CFDI global of its day exists: the refund waits, the global
    invoice bills the sale in full, and the wait ends in an Egreso against the global invoice."""
    sale = await insert_sale(db, during(YESTERDAY.starts_at, 8), amount_minor=34_800)
    settings = configure()
    system = start_worker(settings_override=settings, queues=["stamping"])
    system.broker.get_actor("issue_credit_note").send(sale, 10_000)
    await wait_for(
        lambda: db.fetchval(
            "SELECT count(*) = 1 FROM deferred_credit_notes WHERE payment_id = $1", sale
        ),
        timeout=30,
    )
    assert await credit_notes.of_payment(db, sale) == []

    await invoicer().run(NOW)
    [covering] = await all_globals(db)
    scheduler_side = resources_for(settings)
    await scheduler_side.start()
    try:
        await resume_deferred_credit_notes(scheduler_side)
    finally:
        await scheduler_side.close()

    async def stamped_note() -> Any:
        notes = await credit_notes.of_payment(db, sale)
        return notes[0] if notes and notes[0].stamped_xml is not None else None

    note = await wait_for(stamped_note, timeout=30)
    assert note.total == Decimal("100.00")
    related = etree.fromstring(note.stamped_xml).find(f"{CFDI}CfdiRelacionados")
    assert related is not None and [r.attrib["UUID"] for r in related] == [covering.uuid]
