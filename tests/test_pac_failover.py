"""The failover PAC: an outage of the first PAC stamps at the second, and a lost answer from
either is settled at the PAC that may hold the stamp, never by a second stamp elsewhere. SW's
and Finkok's stand-ins, the real PostgreSQL, RabbitMQ and a worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr, ValidationError
from satcfdi.models import Signer

from colmena.actors.invoice_stamping import InvoiceStamper
from colmena.config import Settings
from colmena.gateways.cfdi import load_signer, sign_invoice
from colmena.gateways.csd import csd_signer
from colmena.gateways.pac import (
    PacAmbiguous,
    PacCredentials,
    PacGateway,
    PacUnavailable,
    pac_gateway,
)
from colmena.gateways.stamping_config import stamping_config
from colmena.runtime.publisher import AmqpPublisher
from colmena.store import invoices
from colmena.store.pool import create_pool
from tests.conftest import wait_for
from tests.standins.csd import (
    ISSUER_NAME,
    ISSUER_RFC,
    RECEIVER_RFC,
    CertificateAuthority,
    CsdFiles,
    make_ca,
    make_csd,
    make_sat_certificate,
)
from tests.standins.finkok import StandInFinkok
from tests.standins.pac import StandInSW, sample_invoice
from tests.standins.smtp import SmtpStandin
from tests.test_stamping import CUSTOMER, insert_payment


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return make_ca()


@pytest.fixture(scope="module")
def csd(ca: CertificateAuthority) -> CsdFiles:
    return make_csd(ca)


def sat_signer(ca: CertificateAuthority, pac_rfc: str) -> Signer:
    files = make_sat_certificate(ca, pac_rfc=pac_rfc)
    return load_signer(files.certificate, files.key, files.password)


@pytest.fixture
async def sw(ca: CertificateAuthority) -> AsyncIterator[StandInSW]:
    stand_in = StandInSW(
        sat_signer=sat_signer(ca, "LSO1306189R5"), registered_rfcs={ISSUER_RFC, RECEIVER_RFC}
    )
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


@pytest.fixture
async def finkok(ca: CertificateAuthority) -> AsyncIterator[StandInFinkok]:
    stand_in = StandInFinkok(sat_signer=sat_signer(ca, "FIN1203015JA"))
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpStandin]:
    with SmtpStandin() as server:
        yield server


@pytest.fixture
def configured(
    settings: Settings,
    sw: StandInSW,
    finkok: StandInFinkok,
    smtp: SmtpStandin,
    csd: CsdFiles,
    tmp_path: Path,
) -> Settings:
    """SW first, Finkok as the failover."""
    cer, key = csd.write(tmp_path, "csd")
    return settings.model_copy(
        update={
            "pac_provider": "sw",
            "pac_base_url": sw.url,
            "pac_token": SecretStr(sw.token),
            "pac_failover_provider": "finkok",
            "pac_failover_base_url": finkok.url,
            "pac_failover_user": finkok.user,
            "pac_failover_password": SecretStr(finkok.password),
            "pac_timeout_seconds": 1.0,
            "cfdi_csd_cer_path": cer,
            "cfdi_csd_key_path": key,
            "cfdi_csd_password": SecretStr(csd.password),
            "cfdi_issuer_rfc": ISSUER_RFC,
            "cfdi_issuer_name": ISSUER_NAME,
            "cfdi_issuer_regime": "601",
            "cfdi_issuer_postal_code": "42501",
            "smtp_host": smtp.host,
            "smtp_port": smtp.port,
            "smtp_starttls": False,
            "smtp_sender": "facturas@colmena.example",
        }
    )


@pytest.fixture
async def stamper(configured: Settings) -> AsyncIterator[InvoiceStamper]:
    """The stamping work of one worker, called directly so each attempt is the test's."""
    pool = await create_pool(configured.require_database_url(), min_size=1, max_size=2)
    publisher = AmqpPublisher(configured.require_broker_url(), configured.queue_prefix)
    yield InvoiceStamper(
        pool=pool,
        publisher=publisher,
        config=stamping_config(configured),
        signer=csd_signer(configured),
        pac=pac_gateway(configured),
        storage=None,
    )
    await publisher.close()
    await pool.close()


def calls(stand_in: StandInSW | StandInFinkok) -> int:
    return sum(kind in ("stamp", "stamped") for kind, _ in stand_in.received)


async def route(db: asyncpg.Connection, payment_id: int) -> tuple[str | None, int]:
    row = await db.fetchrow(
        "SELECT pac_provider, pac_uncertain FROM invoices WHERE payment_id = $1", payment_id
    )
    assert row is not None
    return row["pac_provider"], row["pac_uncertain"]


async def test_an_outage_of_the_first_pac_stamps_at_the_second(
    db: asyncpg.Connection, stamper: InvoiceStamper, sw: StandInSW, finkok: StandInFinkok
) -> None:
    payment_id = await insert_payment(db)
    sw.fail_next = 1

    await stamper.stamp(payment_id)

    invoice = await invoices.get_by_payment(db, payment_id)
    assert invoice is not None and invoice.status == "stamped"
    assert list(finkok.stamps) == [invoice.uuid] and sw.stamps == {}
    assert calls(sw) == 1 and (await route(db, payment_id))[0] == "finkok"


async def test_a_lost_answer_at_the_first_pac_keeps_the_invoice_there_through_an_outage(
    db: asyncpg.Connection, stamper: InvoiceStamper, sw: StandInSW, finkok: StandInFinkok
) -> None:
    payment_id = await insert_payment(db)
    sw.drop_next = 1
    with pytest.raises(PacAmbiguous):
        await stamper.stamp(payment_id)  # SW stamped it; the answer was lost

    sw.fail_next = 2
    for _ in range(2):  # SW is down now, but it may hold the stamp: no failover
        with pytest.raises(PacUnavailable):
            await stamper.stamp(payment_id)
    assert finkok.received == []

    await stamper.stamp(payment_id)

    invoice = await invoices.get_by_payment(db, payment_id)
    assert invoice is not None and invoice.recovered and list(sw.stamps) == [invoice.uuid]
    assert finkok.received == [] and finkok.stamps == {}


async def test_a_lost_answer_at_the_second_pac_is_settled_there_once_the_first_is_back(
    db: asyncpg.Connection, stamper: InvoiceStamper, sw: StandInSW, finkok: StandInFinkok
) -> None:
    payment_id = await insert_payment(db)
    sw.fail_next, finkok.drop_next = 1, 1
    with pytest.raises(PacAmbiguous):
        await stamper.stamp(payment_id)  # SW down, Finkok stamped it, its answer lost
    assert await route(db, payment_id) == ("finkok", 1)

    await stamper.stamp(payment_id)  # SW answers again; the invoice still goes to Finkok

    invoice = await invoices.get_by_payment(db, payment_id)
    assert invoice is not None and invoice.recovered and list(finkok.stamps) == [invoice.uuid]
    assert sw.stamps == {} and calls(sw) == 1


async def test_both_down_retries_and_returns_to_the_first(
    db: asyncpg.Connection, stamper: InvoiceStamper, sw: StandInSW, finkok: StandInFinkok
) -> None:
    payment_id = await insert_payment(db)
    sw.fail_next, finkok.fail_next = 1, 1
    with pytest.raises(PacUnavailable):
        await stamper.stamp(payment_id)
    assert await route(db, payment_id) == ("finkok", 0)  # nothing outstanding anywhere

    await stamper.stamp(payment_id)

    invoice = await invoices.get_by_payment(db, payment_id)
    assert invoice is not None and list(sw.stamps) == [invoice.uuid] and finkok.stamps == {}
    assert (calls(sw), calls(finkok)) == (2, 1)


async def test_an_attempt_that_died_mid_call_pins_the_invoice_to_its_pac(
    db: asyncpg.Connection, stamper: InvoiceStamper, sw: StandInSW, finkok: StandInFinkok
) -> None:
    payment_id = await insert_payment(db)
    sw.fail_next = 1
    await stamper.stamp(payment_id)  # stamped at Finkok: the invoice exists
    other = await insert_payment(db)
    await stamper._open_invoice(other)
    invoice = await invoices.get_by_payment(db, other)
    assert invoice is not None
    # A worker counted its call to SW, then died before the answer.
    assert await invoices.enter_pac(db, invoice.id, primary="sw") == "sw"
    sw.fail_next = 1

    with pytest.raises(PacUnavailable):
        await stamper.stamp(other)

    assert len(finkok.stamps) == 1 and await route(db, other) == ("sw", 1)


async def test_concurrent_attempts_move_the_invoice_only_when_none_is_outstanding(
    db: asyncpg.Connection, stamper: InvoiceStamper
) -> None:
    payment_id = await insert_payment(db)
    invoice = await stamper._open_invoice(payment_id)
    assert invoice is not None
    for _ in range(2):
        assert await invoices.enter_pac(db, invoice.id, primary="sw") == "sw"

    assert not await invoices.leave_pac(db, invoice.id, "sw", switch_to="finkok")
    assert await route(db, payment_id) == ("sw", 1)
    assert not await invoices.leave_pac(db, invoice.id, "finkok", switch_to="sw")
    assert await invoices.leave_pac(db, invoice.id, "sw", switch_to="finkok")
    assert await route(db, payment_id) == ("finkok", 1)


async def test_a_worker_fails_over_and_emails_the_invoice(
    db: asyncpg.Connection,
    configured: Settings,
    start_worker: Callable[..., Any],
    sw: StandInSW,
    finkok: StandInFinkok,
    smtp: SmtpStandin,
) -> None:
    system = start_worker(settings_override=configured)
    payment_id = await insert_payment(db)
    sw.fail_next = 1

    system.broker.get_actor("stamp_invoice").send(payment_id)

    [mail] = await smtp.wait_for_async(1, timeout=30)

    async def emailed() -> bool:
        invoice = await invoices.get_by_payment(db, payment_id)
        return invoice is not None and invoice.emailed_at is not None

    await wait_for(emailed)
    invoice = await invoices.get_by_payment(db, payment_id)
    assert invoice is not None and list(finkok.stamps) == [invoice.uuid] and sw.stamps == {}
    assert mail.rcpt_tos == [CUSTOMER]


def test_the_failover_must_be_another_pac(settings: Settings) -> None:
    with pytest.raises(ValidationError, match="COLMENA_PAC_FAILOVER_PROVIDER is sw"):
        Settings.model_validate(
            settings.model_dump() | {"pac_provider": "sw", "pac_failover_provider": "sw"}
        )


async def test_a_stamp_the_pac_holds_but_cannot_return_is_never_unavailable(
    sw: StandInSW, csd: CsdFiles
) -> None:
    """After a duplicate answer the PAC holds a stamp: failing to fetch it must not read as
    "not stamped", the one answer that lets an invoice move to the other PAC."""
    closed = StandInSW(sat_signer=sw.sat_signer)
    await closed.start()
    await closed.stop()  # its port now refuses connections: SW's storage host is down
    gateway = PacGateway(
        "sw",
        "TEST",
        credentials=PacCredentials(token=sw.token),
        timeout=1.0,
        base_url=sw.url,
        api_url=closed.url,
    )
    xml = sign_invoice(sample_invoice(), load_signer(csd.certificate, csd.key, csd.password)).xml
    sw.drop_next = 1
    with pytest.raises(PacAmbiguous):
        await asyncio.to_thread(gateway.stamp, xml, reference="invoice-1")

    with pytest.raises(PacAmbiguous, match="holds this document's stamp"):
        await asyncio.to_thread(gateway.stamp, xml, reference="invoice-1")  # CFDI3307, then lookup

    assert len(sw.stamps) == 1
