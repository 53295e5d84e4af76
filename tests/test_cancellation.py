"""Cancelling stamped CFDI at the SAT, on the real services: PostgreSQL, the SW stand-in PAC
(which checks each request against the SAT's CancelaCfdi schema and the CSD's signature) and the
SAT status-service stand-in, with CSDs minted by the fixtures. The polling job is driven tick by
tick with a clock of the test's own, so no test waits for time to pass."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from click.testing import CliRunner, Result
from lxml import etree
from prometheus_client import REGISTRY
from satcfdi.models import Signer

from colmena.actors.invoice_cancellation import Canceller
from colmena.cli import cli
from colmena.domain.cancellation import CancellationRefused, State
from colmena.gateways.cfdi import load_signer, sign_invoice
from colmena.gateways.csd import CsdSigner
from colmena.gateways.pac import (
    PacAmbiguous,
    PacCredentials,
    PacGateway,
    PacRejected,
    PacUnavailable,
)
from colmena.gateways.sat_status import SatStatusClient, SatStatusUnavailable
from colmena.gateways.stamping_config import CsdSource
from colmena.sandbox.cancelacion_check import CANCELA, CancelacionInvalid, check_cancelacion
from colmena.sandbox.pac import SANDBOX_TOKEN, pac_app
from colmena.store import cancellations, invoices
from colmena.store.pool import create_pool
from tests.standins.csd import (
    ISSUER_RFC,
    RECEIVER_RFC,
    CertificateAuthority,
    CsdFiles,
    make_ca,
    make_csd,
    make_sat_certificate,
)
from tests.standins.pac import StandInSW, sample_invoice
from tests.standins.sat_status import StandInSat
from tests.test_stamping import insert_payment

SMALL = "100.00"  # total 463.97 MXN: no acceptance (RMF 2.7.1.35 fracción I)
LARGE = "1250.50"  # total 1,798.55 MXN: the receiver must accept


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return make_ca()


@pytest.fixture(scope="module")
def csd(ca: CertificateAuthority) -> CsdFiles:
    return make_csd(ca)


@pytest.fixture(scope="module")
def csd_signer(csd: CsdFiles) -> Signer:
    return load_signer(csd.certificate, csd.key, csd.password)


@pytest.fixture
async def sat() -> AsyncIterator[StandInSat]:
    stand_in = StandInSat()
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


@pytest.fixture
async def pac(ca: CertificateAuthority, sat: StandInSat) -> AsyncIterator[StandInSW]:
    files = make_sat_certificate(ca)
    stand_in = StandInSW(
        sat_signer=load_signer(files.certificate, files.key, files.password),
        registered_rfcs={ISSUER_RFC, RECEIVER_RFC},
        sat=sat,
    )
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


def gateway(pac: StandInSW) -> PacGateway:
    return PacGateway(
        "sw", "TEST", credentials=PacCredentials(token=pac.token), timeout=1.0, base_url=pac.url
    )


class Clock:
    """The canceller's clock; a test moves it instead of waiting."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def canceller(
    database_url: str,
    pac: StandInSW,
    sat: StandInSat,
    csd: CsdFiles,
    clock: Clock,
    tmp_path: Path,
) -> AsyncIterator[Canceller]:
    cer, key = csd.write(tmp_path, "csd")
    pool = await create_pool(database_url, min_size=1, max_size=4)
    yield Canceller(
        pool=pool,
        pac=gateway(pac),
        signer=CsdSigner(CsdSource(certificate=cer, key=key, password=csd.password)),
        sat=SatStatusClient(base_url=sat.url, timeout=1.0),
        clock=clock,
    )
    await pool.close()


async def stamped_invoice(
    db: asyncpg.Connection,
    pac: StandInSW,
    signer: Signer,
    *,
    unit_price: str = SMALL,
    fecha_timbrado: dt.datetime | None = None,
) -> int:
    """An invoice row stamped by the stand-in PAC (as the stamper leaves it), its id."""
    payment_id = await insert_payment(db)
    invoice = await invoices.create(db, payment_id=payment_id, issuer_rfc=ISSUER_RFC, series="A")
    signed = sign_invoice(sample_invoice(folio=str(invoice.folio), unit_price=unit_price), signer)
    result = await asyncio.to_thread(gateway(pac).stamp, signed.xml, reference=str(invoice.id))
    root = etree.fromstring(signed.xml)
    await invoices.save_signed(
        db,
        invoice.id,
        xml=signed.xml,
        total=Decimal(root.attrib["Total"]),
        currency="MXN",
        receiver_rfc=RECEIVER_RFC,
        receiver_email="compras@robotica.example",
    )
    await invoices.mark_stamped(
        db,
        invoice.id,
        stamped_xml=result.xml,
        uuid=result.uuid,
        fecha_timbrado=fecha_timbrado or result.fecha_timbrado,
        recovered=False,
        xml_path=None,
    )
    return invoice.id


def days_ago(days: int) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(days=days)


async def uuid_of(db: asyncpg.Connection, invoice_id: int) -> str:
    invoice = await invoices.get(db, invoice_id)
    assert invoice is not None and invoice.uuid is not None
    return invoice.uuid


async def state_of(db: asyncpg.Connection, invoice_id: int) -> State:
    record = await cancellations.get(db, invoice_id)
    assert record is not None
    return record.state


async def run_cli(database_url: str, sat: StandInSat, *args: str) -> Result:
    env = {"COLMENA_DATABASE_URL": database_url, "COLMENA_SAT_STATUS_URL": sat.url}
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("colmena_cfdi_cancellations_total", {"outcome": outcome}) or 0


# -- the request on the wire ---------------------------------------------------------------------


async def test_the_request_is_the_sats_signed_cancelacion_with_folio_sustitucion_only_for_01(
    db: asyncpg.Connection, pac: StandInSW, csd_signer: Signer
) -> None:
    replaced = await stamped_invoice(db, pac, csd_signer)
    plain = await stamped_invoice(db, pac, csd_signer)
    replacement = await uuid_of(db, plain)
    stamped = {i: (await invoices.get(db, i)).stamped_xml for i in (replaced, plain)}  # type: ignore[union-attr]

    filed = await asyncio.to_thread(
        gateway(pac).cancel,
        stamped[replaced],
        motive="01",
        replacement_uuid=replacement,
        signer=csd_signer,
    )
    await asyncio.to_thread(
        gateway(pac).cancel, stamped[plain], motive="02", replacement_uuid=None, signer=csd_signer
    )

    assert filed.code == "201" and filed.acuse is not None and b"EstatusUUID" in filed.acuse
    first, second = (check_cancelacion(raw) for raw in pac.cancellation_requests)
    assert first.issuer_rfc == second.issuer_rfc == ISSUER_RFC
    assert [(f.uuid, f.motive, f.replacement) for f in first.folios] == [
        (await uuid_of(db, replaced), "01", replacement)
    ]
    [folio] = etree.fromstring(pac.cancellation_requests[1]).iter(f"{{{CANCELA}}}Folio")
    assert folio.attrib["Motivo"] == "02" and "FolioSustitucion" not in folio.attrib


async def test_an_altered_or_foreign_request_fails_the_sats_checks(
    db: asyncpg.Connection, pac: StandInSW, csd_signer: Signer, ca: CertificateAuthority
) -> None:
    invoice_id = await stamped_invoice(db, pac, csd_signer)
    stamped = (await invoices.get(db, invoice_id)).stamped_xml  # type: ignore[union-attr]
    await asyncio.to_thread(
        gateway(pac).cancel, stamped, motive="02", replacement_uuid=None, signer=csd_signer
    )
    [raw] = pac.cancellation_requests
    altered = raw.replace(b'Motivo="02"', b'Motivo="03"')
    with pytest.raises(CancelacionInvalid, match="altered after signing"):
        check_cancelacion(altered)
    with pytest.raises(CancelacionInvalid, match="CancelaCfdi.xsd"):
        check_cancelacion(raw.replace(b'Motivo="02"', b'Motivo="09"'))
    other = make_csd(ca, rfc="URE180429TM6")
    foreign = load_signer(other.certificate, other.key, other.password)
    with pytest.raises(PacRejected) as refused:  # another taxpayer's CSD: not the issuer's
        await asyncio.to_thread(
            gateway(pac).cancel, stamped, motive="02", replacement_uuid=None, signer=foreign
        )
    assert refused.value.code == "203"


# -- the state machine -----------------------------------------------------------------------------


async def test_a_small_invoice_is_cancelled_without_acceptance(
    db: asyncpg.Connection,
    pac: StandInSW,
    sat: StandInSat,
    csd_signer: Signer,
    canceller: Canceller,
) -> None:
    invoice_id = await stamped_invoice(db, pac, csd_signer, fecha_timbrado=days_ago(10))
    before = counted("cancelled")

    record = await canceller.request(invoice_id, motive="02")
    assert record.state is State.REQUESTED and record.needs_acceptance is False
    assert (await invoices.get(db, invoice_id)).status == "cancellation_requested"  # type: ignore[union-attr]
    await canceller.tick()  # files it
    assert await state_of(db, invoice_id) is State.IN_PROCESS
    await canceller.tick()  # asks the SAT

    final = await cancellations.get(db, invoice_id)
    assert final is not None and final.state is State.CANCELLED and final.next_poll_at is None
    assert (final.sat_estado, final.sat_estatus) == ("Cancelado", "Cancelado sin aceptación")
    assert counted("cancelled") == before + 1
    polls = len(sat.queries)
    await canceller.tick()
    assert len(sat.queries) == polls, "a final state is not polled again"


@pytest.mark.parametrize(
    ("receiver", "final"),
    [("accept", State.CANCELLED), ("reject", State.REJECTED), ("let_expire", State.EXPIRED)],
)
async def test_a_large_invoice_waits_for_the_receiver(
    db: asyncpg.Connection,
    pac: StandInSW,
    sat: StandInSat,
    csd_signer: Signer,
    canceller: Canceller,
    clock: Clock,
    receiver: str,
    final: State,
) -> None:
    invoice_id = await stamped_invoice(
        db, pac, csd_signer, unit_price=LARGE, fecha_timbrado=days_ago(10)
    )
    record = await canceller.request(invoice_id, motive="03")
    assert record.needs_acceptance is True
    await canceller.tick()
    await canceller.tick()
    waiting = await cancellations.get(db, invoice_id)
    assert waiting is not None and waiting.state is State.AWAITING_ACCEPTANCE
    assert waiting.next_poll_at is not None and waiting.next_poll_at > clock.now
    assert await canceller.tick() == 0, "not polled before its delay"

    getattr(sat, receiver)(await uuid_of(db, invoice_id))
    clock.advance(dt.timedelta(hours=7))
    await canceller.tick()

    done = await cancellations.get(db, invoice_id)
    assert done is not None and done.state is final and done.next_poll_at is None
    polls = len(sat.queries)
    clock.advance(dt.timedelta(days=2))
    assert await canceller.tick() == 0 and len(sat.queries) == polls


async def test_an_acceptance_past_three_business_days_raises_the_overdue_gauge(
    db: asyncpg.Connection, pac: StandInSW, csd_signer: Signer, canceller: Canceller, clock: Clock
) -> None:
    invoice_id = await stamped_invoice(
        db, pac, csd_signer, unit_price=LARGE, fecha_timbrado=days_ago(10)
    )
    await canceller.request(invoice_id, motive="02")
    await canceller.tick()
    await canceller.tick()
    assert await state_of(db, invoice_id) is State.AWAITING_ACCEPTANCE
    assert await canceller.refresh_overdue() == 0
    clock.advance(dt.timedelta(days=6))  # three business days are over whatever the weekday
    assert await canceller.refresh_overdue() == 1
    assert REGISTRY.get_sample_value("colmena_cfdi_acceptance_overdue") == 1


async def test_pac_down_then_lost_answer_files_once_and_recognises_202(
    db: asyncpg.Connection,
    pac: StandInSW,
    sat: StandInSat,
    csd_signer: Signer,
    canceller: Canceller,
    clock: Clock,
) -> None:
    invoice_id = await stamped_invoice(db, pac, csd_signer, fecha_timbrado=days_ago(10))
    await canceller.request(invoice_id, motive="02")
    pac.cancel_fail_next = 1
    with pytest.raises(PacUnavailable):
        await canceller.file(invoice_id)
    down = await cancellations.get(db, invoice_id)
    assert (
        down is not None and down.state is State.REQUESTED and "HTTP 500" in (down.last_error or "")
    )
    assert await canceller.tick() == 0, "not filed again before its delay"

    pac.cancel_drop_next = 1  # the SAT files it, the answer is lost
    clock.advance(dt.timedelta(minutes=10))
    await canceller.tick()
    lost = await cancellations.get(db, invoice_id)
    assert lost is not None and lost.state is State.REQUESTED and lost.request_attempts == 2

    clock.advance(dt.timedelta(minutes=30))
    await canceller.tick()  # sent again: 202, cancelled before
    filed = await cancellations.get(db, invoice_id)
    assert filed is not None and filed.state is State.IN_PROCESS and filed.pac_code == "202"
    await canceller.tick()
    assert await state_of(db, invoice_id) is State.CANCELLED
    assert len(pac.cancellation_requests) == 2  # the 500 came before the body was read
    with pytest.raises(PacAmbiguous):
        pac.cancel_drop_next = 1
        stamped = (await invoices.get(db, invoice_id)).stamped_xml  # type: ignore[union-attr]
        await asyncio.to_thread(
            gateway(pac).cancel, stamped, motive="02", replacement_uuid=None, signer=csd_signer
        )


async def test_status_service_down_keeps_the_state_and_asks_later(
    db: asyncpg.Connection,
    pac: StandInSW,
    sat: StandInSat,
    csd_signer: Signer,
    canceller: Canceller,
    clock: Clock,
) -> None:
    invoice_id = await stamped_invoice(db, pac, csd_signer, fecha_timbrado=days_ago(10))
    await canceller.request(invoice_id, motive="02")
    await canceller.tick()
    sat.fail_next = 1
    before = counted("status_unavailable")
    await canceller.tick()
    down = await cancellations.get(db, invoice_id)
    assert down is not None and down.state is State.IN_PROCESS
    assert "HTTP 500" in (down.last_error or "") and counted("status_unavailable") == before + 1
    with pytest.raises(SatStatusUnavailable):
        sat.fail_next = 1
        await asyncio.to_thread(
            SatStatusClient(base_url=sat.url).status,
            (await invoices.get(db, invoice_id)).stamped_xml,  # type: ignore[union-attr]
        )
    clock.advance(dt.timedelta(minutes=10))
    await canceller.tick()
    assert await state_of(db, invoice_id) is State.CANCELLED


async def test_permanent_refusals_end_the_cancellation_without_loops(
    db: asyncpg.Connection,
    pac: StandInSW,
    sat: StandInSat,
    csd_signer: Signer,
    canceller: Canceller,
    clock: Clock,
) -> None:
    blocked = await stamped_invoice(db, pac, csd_signer, fecha_timbrado=days_ago(10))
    sat.records[await uuid_of(db, blocked)].blocked = True  # an Egreso relates to it
    unknown = await stamped_invoice(db, pac, csd_signer, fecha_timbrado=days_ago(10))
    del pac.stamps[await uuid_of(db, unknown)]  # the PAC never heard of it: 205
    for invoice_id in (blocked, unknown):
        await canceller.request(invoice_id, motive="02")

    await canceller.tick()
    await canceller.tick()

    refused_unknown = await cancellations.get(db, unknown)
    assert refused_unknown is not None and refused_unknown.state is State.REFUSED
    assert refused_unknown.pac_code == "205"
    refused_blocked = await cancellations.get(db, blocked)
    assert refused_blocked is not None and refused_blocked.state is State.REFUSED
    assert "No cancelable" in (refused_blocked.pac_message or "")
    requests, queries = len(pac.cancellation_requests), len(sat.queries)
    clock.advance(dt.timedelta(days=3))
    assert await canceller.tick() == 0
    assert (len(pac.cancellation_requests), len(sat.queries)) == (requests, queries)


async def test_a_refund_cancels_with_the_refund_motive_and_a_repeat_is_a_no_op(
    db: asyncpg.Connection, pac: StandInSW, csd_signer: Signer, canceller: Canceller
) -> None:
    invoice_id = await stamped_invoice(db, pac, csd_signer)
    invoice = await invoices.get(db, invoice_id)
    assert invoice is not None

    await canceller.cancel_refunded(invoice.payment_id)
    await canceller.cancel_refunded(invoice.payment_id)

    record = await cancellations.get(db, invoice_id)
    assert record is not None and record.state is State.IN_PROCESS
    assert (record.motive, record.source, record.request_attempts) == ("03", "refund", 1)
    assert len(pac.cancellation_requests) == 1


async def test_a_stamp_that_arrives_after_the_refund_is_cancelled_by_the_job(
    db: asyncpg.Connection, pac: StandInSW, csd_signer: Signer, canceller: Canceller
) -> None:
    invoice_id = await stamped_invoice(db, pac, csd_signer)
    await invoices.request_cancellation(db, invoice_id)  # the refund came first

    await canceller.tick()

    record = await cancellations.get(db, invoice_id)
    assert record is not None and record.source == "refund" and record.motive == "03"
    assert record.state is State.IN_PROCESS and record.request_attempts == 1
    await canceller.tick()
    assert await state_of(db, invoice_id) is State.CANCELLED


# -- bad input ---------------------------------------------------------------------------------


async def test_bad_requests_are_refused_and_change_nothing(
    db: asyncpg.Connection, pac: StandInSW, csd_signer: Signer, canceller: Canceller
) -> None:
    payment_id = await insert_payment(db)
    unstamped = await invoices.create(db, payment_id=payment_id, issuer_rfc=ISSUER_RFC, series="A")
    stamped = await stamped_invoice(db, pac, csd_signer)
    cases: list[tuple[int, dict[str, Any], str]] = [
        (unstamped.id, {"motive": "02"}, "is not stamped"),
        (stamped, {"motive": "01"}, "needs the UUID of the replacing CFDI"),
        (stamped, {"motive": "02", "replacement_uuid": await uuid_of(db, stamped)}, "only for 01"),
        (999_999, {"motive": "02"}, "no invoice 999999"),
    ]
    for invoice_id, arguments, message in cases:
        with pytest.raises(CancellationRefused, match=message):
            await canceller.request(invoice_id, **arguments)
    assert await db.fetchval("SELECT count(*) FROM invoice_cancellations") == 0
    statuses = await db.fetch("SELECT status FROM invoices ORDER BY id")
    assert [row["status"] for row in statuses] == ["pending", "stamped"]
    assert pac.cancellation_requests == []


# -- the operator's commands ---------------------------------------------------------------------


async def test_cli_cancel_show_and_refusals(
    db: asyncpg.Connection,
    database_url: str,
    pac: StandInSW,
    sat: StandInSat,
    csd_signer: Signer,
    canceller: Canceller,
) -> None:
    invoice_id = await stamped_invoice(
        db, pac, csd_signer, unit_price=LARGE, fecha_timbrado=days_ago(10)
    )
    missing = await run_cli(
        database_url, sat, "invoices", "cancel", str(invoice_id), "--motive", "01"
    )
    assert missing.exit_code == 1 and "needs the UUID of the replacing CFDI" in missing.output

    done = await run_cli(database_url, sat, "invoices", "cancel", str(invoice_id), "--motive", "02")
    assert done.exit_code == 0, done.output
    assert "needs the receiver's acceptance" in done.output and "outbox" in done.output
    queued = await db.fetch("SELECT args FROM outbox WHERE actor = 'file_cancellation'")
    assert [row["args"] for row in queued] == [[invoice_id]]
    again = await run_cli(
        database_url, sat, "invoices", "cancel", str(invoice_id), "--motive", "02"
    )
    assert again.exit_code == 1 and "already requested" in again.output

    await canceller.file(invoice_id)
    await canceller.tick()
    shown = await run_cli(database_url, sat, "invoices", "show", str(invoice_id))
    assert shown.exit_code == 0, shown.output
    assert "awaiting_acceptance" in shown.output and "RMF 2.7.1.35" in shown.output
    assert "RMF 2.7.1.34" in shown.output and "En proceso" in shown.output


async def test_verify_lists_every_disagreement_with_the_sat(
    db: asyncpg.Connection,
    database_url: str,
    pac: StandInSW,
    sat: StandInSat,
    csd_signer: Signer,
    canceller: Canceller,
) -> None:
    agreed = await stamped_invoice(db, pac, csd_signer)
    cancelled_elsewhere = await stamped_invoice(db, pac, csd_signer)
    unknown = await stamped_invoice(db, pac, csd_signer)
    await canceller.request(agreed, motive="02")
    await canceller.tick()
    await canceller.tick()
    today = dt.datetime.now(dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=-6))).date()
    period = [
        "--from",
        str(today - dt.timedelta(days=1)),
        "--to",
        str(today + dt.timedelta(days=1)),
    ]

    clean = await run_cli(database_url, sat, "invoices", "verify", *period)
    assert clean.exit_code == 0, clean.output
    assert "3 invoices checked, 0 disagreements" in clean.output

    sat.accept(await uuid_of(db, cancelled_elsewhere))  # cancelled in the SAT portal
    del sat.records[await uuid_of(db, unknown)]
    found = await run_cli(database_url, sat, "invoices", "verify", *period)
    assert found.exit_code == 1
    lines = {
        line.split()[0]: line for line in found.output.splitlines() if line[:6].strip().isdigit()
    }
    assert set(lines) == {str(cancelled_elsewhere), str(unknown)}
    assert "in force in colmena, cancelled at the SAT" in lines[str(cancelled_elsewhere)]
    assert "does not know this UUID" in lines[str(unknown)]
    assert "3 invoices checked, 2 disagreements" in found.output


# -- colmena dev's PAC sandbox --------------------------------------------------------------------


async def test_the_dev_sandbox_cancels_and_its_status_service_says_so(csd_signer: Signer) -> None:
    runner = web.AppRunner(pac_app(), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}"
    try:
        sandbox = PacGateway(
            "sw", "TEST", credentials=PacCredentials(token=SANDBOX_TOKEN), timeout=2.0, base_url=url
        )
        signed = sign_invoice(sample_invoice(unit_price=LARGE), csd_signer)
        stamp = await asyncio.to_thread(sandbox.stamp, signed.xml, reference="sandbox-1")
        status = SatStatusClient(base_url=url, timeout=2.0)
        before = await asyncio.to_thread(status.status, stamp.xml)
        assert (before.estado, before.estatus_cancelacion) == ("Vigente", "")

        filed = await asyncio.to_thread(
            sandbox.cancel, stamp.xml, motive="02", replacement_uuid=None, signer=csd_signer
        )
        again = await asyncio.to_thread(
            sandbox.cancel, stamp.xml, motive="02", replacement_uuid=None, signer=csd_signer
        )

        assert (filed.code, again.code) == ("201", "202")
        after = await asyncio.to_thread(status.status, stamp.xml)
        assert (after.estado, after.estatus_cancelacion) == (
            "Cancelado",
            "Cancelado con aceptación",
        )
    finally:
        await runner.cleanup()
