"""CFDI stamping end to end: a real worker on RabbitMQ and PostgreSQL, the SW stand-in PAC, the
SMTP stand-in, and CSDs minted by the fixtures."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree
from prometheus_client import REGISTRY
from pydantic import SecretStr
from satcfdi.models import Signer
from satcfdi.transform import xslt_transform

from colmena.actors.invoice_delivery import DELIVERY_LOCK, deliver
from colmena.actors.stamping import watch_csd
from colmena.cli import cli
from colmena.config import Settings
from colmena.config.shared_client import SharedClient
from colmena.gateways.cfdi import TFD, load_signer, validate_xml
from colmena.gateways.csd import CSD_SIGNER
from colmena.gateways.mailer import MAILER
from colmena.gateways.pac import PAC_GATEWAY
from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.resources import Resources
from colmena.store import invoices
from colmena.store.invoices import InvoiceRecord
from tests.conftest import queue_counts, wait_for
from tests.fuzz_support import LogCapture, capture_logs
from tests.standins.csd import (
    ISSUER_NAME,
    ISSUER_RFC,
    RECEIVER_NAME,
    RECEIVER_RFC,
    CertificateAuthority,
    CsdFiles,
    make_ca,
    make_csd,
    make_expired_csd,
    make_sat_certificate,
)
from tests.standins.pac import StandInSW
from tests.standins.smtp import SmtpStandin

UNREGISTERED_RFC = "MAG041126GT8"
CUSTOMER = "compras@robotica.example"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return make_ca()


@pytest.fixture(scope="module")
def csd(ca: CertificateAuthority) -> CsdFiles:
    return make_csd(ca)


@pytest.fixture(scope="module")
def sat_files(ca: CertificateAuthority) -> CsdFiles:
    return make_sat_certificate(ca)


@pytest.fixture
async def pac(sat_files: CsdFiles) -> AsyncIterator[StandInSW]:
    signer: Signer = load_signer(sat_files.certificate, sat_files.key, sat_files.password)
    stand_in = StandInSW(sat_signer=signer, registered_rfcs={ISSUER_RFC, RECEIVER_RFC})
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpStandin]:
    with SmtpStandin() as server:
        yield server


@pytest.fixture
def configure(
    settings: Settings, pac: StandInSW, smtp: SmtpStandin, csd: CsdFiles, tmp_path: Path
) -> Callable[..., Settings]:
    """Settings pointing at the stand-ins, with `csd` (or another CSD) as the issuer's."""

    def make(certificate: CsdFiles = csd, **changes: Any) -> Settings:
        cer, key = certificate.write(tmp_path, f"csd-{certificate.certificate_number}")
        return settings.model_copy(
            update={
                "pac_base_url": pac.url,
                "pac_token": SecretStr(pac.token),
                "pac_timeout_seconds": 1.0,
                "cfdi_csd_cer_path": cer,
                "cfdi_csd_key_path": key,
                "cfdi_csd_password": SecretStr(certificate.password),
                "cfdi_issuer_rfc": ISSUER_RFC,
                "cfdi_issuer_name": ISSUER_NAME,
                "cfdi_issuer_regime": "601",
                "cfdi_issuer_postal_code": "42501",
                "smtp_host": smtp.host,
                "smtp_port": smtp.port,
                "smtp_starttls": False,
                "smtp_sender": "facturas@colmena.example",
                **changes,
            }
        )

    return make


async def insert_payment(
    db: asyncpg.Connection, *, amount_minor: int = 129_900, **metadata: str
) -> int:
    fiscal = {
        "rfc": RECEIVER_RFC,
        "fiscal_name": RECEIVER_NAME,
        "fiscal_regime": "601",
        "fiscal_postal_code": "86991",
        "cfdi_use": "G03",
        "payment_form": "04",
        "payment_method": "PUE",
        **metadata,
    }
    return await db.fetchval(
        """
        INSERT INTO payments (provider, provider_payment_id, amount_minor, currency, customer_email,
            customer_locale, product_ref, product_kind, metadata, status, status_at, approved_at)
        VALUES ('stripe', $1, $2, 'mxn', $3, 'es-MX', 'colmena-pro', 'license', $4, 'approved',
            now(), now())
        RETURNING id
        """,
        f"pi_{os.urandom(6).hex()}",
        amount_minor,
        CUSTOMER,
        fiscal,
    )


async def invoice_of(db: asyncpg.Connection, payment_id: int) -> InvoiceRecord | None:
    return await invoices.get_by_payment(db, payment_id)


def stamp_calls(pac: StandInSW) -> list[str]:
    return [customid for kind, customid in pac.received if kind == "stamp"]


async def run_cli(settings: Settings, *args: str) -> Result:
    env = {
        "COLMENA_DATABASE_URL": settings.require_database_url(),
        "COLMENA_BROKER_URL": settings.require_broker_url(),
        "COLMENA_QUEUE_PREFIX": settings.queue_prefix,
    }
    for name in ("cfdi_csd_cer_path", "cfdi_csd_key_path", "cfdi_issuer_rfc"):
        if (value := getattr(settings, name)) is not None:
            env[f"COLMENA_{name.upper()}"] = str(value)
    if settings.cfdi_csd_password is not None:
        env["COLMENA_CFDI_CSD_PASSWORD"] = settings.cfdi_csd_password.get_secret_value()
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)


async def dead_letters(settings: Settings) -> int:
    return (await asyncio.to_thread(queue_counts, settings.queue_prefix + "stamping"))[2]


async def test_approved_payment_is_stamped_filed_and_emailed(
    db: asyncpg.Connection,
    configure,
    start_worker,
    pac: StandInSW,
    smtp: SmtpStandin,
    sat_files: CsdFiles,
) -> None:
    settings = configure()
    system = start_worker(settings_override=settings)
    payment_id = await insert_payment(db, amount_minor=129_900)

    system.broker.get_actor("stamp_invoice").send(payment_id)

    async def emailed() -> InvoiceRecord | None:
        invoice = await invoice_of(db, payment_id)
        return invoice if invoice is not None and invoice.emailed_at is not None else None

    invoice = await wait_for(emailed, timeout=30)
    assert invoice.status == "stamped" and invoice.attempts == 1 and not invoice.recovered
    assert (invoice.series, invoice.folio) == ("A", 1)
    assert invoice.stamped_xml is not None and invoice.xml_path and invoice.pdf_path
    validate_xml(invoice.stamped_xml)
    root = etree.fromstring(invoice.stamped_xml)
    assert Decimal(root.attrib["Total"]) == Decimal("1299.00") == invoice.total
    tfd = root.find(f".//{TFD}")
    assert tfd is not None and tfd.attrib["UUID"] == invoice.uuid
    assert tfd.attrib["SelloCFD"] == root.attrib["Sello"]
    sat_certificate = x509.load_der_x509_certificate(sat_files.certificate)
    cadena = str(xslt_transform(tfd.tag, "1.1")(tfd)).encode()
    sat_certificate.public_key().verify(  # type: ignore[union-attr,call-arg]
        base64.b64decode(tfd.attrib["SelloSAT"]), cadena, padding.PKCS1v15(), hashes.SHA256()
    )
    assert Path(invoice.xml_path).read_bytes() == invoice.stamped_xml
    pdf = Path(invoice.pdf_path).read_bytes()  # the export `colmena dev` writes by default
    assert pdf.startswith(b"%PDF-") and len(pdf) > 5000 and invoice.pdf == pdf

    [mail] = await smtp.wait_for_async(1)
    assert mail.rcpt_tos == [CUSTOMER]
    assert mail.message["Subject"].startswith(f"Factura A1 de {ISSUER_NAME}")
    attached = {part.get_filename(): part.get_content() for part in mail.message.iter_attachments()}
    assert attached == {
        f"A1_{invoice.uuid}.xml": invoice.stamped_xml,
        f"A1_{invoice.uuid}.pdf": pdf,
    }
    assert stamp_calls(pac) == [str(invoice.pac_reference)]


async def test_duplicate_message_stamps_once(
    db: asyncpg.Connection, configure, start_worker, pac: StandInSW, smtp: SmtpStandin
) -> None:
    settings = configure()
    payment_id = await insert_payment(db)
    system = start_worker(settings_override=settings, threads=2)
    stamp = system.broker.get_actor("stamp_invoice")

    stamp.send(payment_id)
    stamp.send(payment_id)

    await smtp.wait_for_async(1, timeout=30)

    async def drained() -> bool:
        return (await asyncio.to_thread(queue_counts, settings.queue_prefix + "stamping"))[:2] == (
            0,
            0,
        )

    await wait_for(drained)
    await asyncio.to_thread(system.worker.join)
    assert len(pac.stamps) == 1
    assert await db.fetchval("SELECT count(*) FROM invoices") == 1
    invoice = await invoice_of(db, payment_id)
    assert invoice is not None and invoice.uuid in pac.stamps
    assert len(smtp.messages) == 1


async def test_stamp_whose_answer_was_lost_is_recovered_not_repeated(
    db: asyncpg.Connection, configure, start_worker, pac: StandInSW, smtp: SmtpStandin
) -> None:
    pac.drop_next = 1
    system = start_worker(settings_override=configure())
    payment_id = await insert_payment(db)

    system.broker.get_actor("stamp_invoice").send(payment_id)

    await smtp.wait_for_async(1, timeout=30)
    invoice = await invoice_of(db, payment_id)
    assert invoice is not None and invoice.status == "stamped"
    assert list(pac.stamps) == [invoice.uuid]
    assert invoice.recovered and invoice.attempts == 2
    assert stamp_calls(pac) == [str(invoice.pac_reference)] * 2


@pytest.mark.parametrize("fault", ["fail_next", "hang_next"])
async def test_pac_5xx_or_timeout_is_retried_until_stamped(
    fault: str, db: asyncpg.Connection, configure, start_worker, pac: StandInSW, smtp: SmtpStandin
) -> None:
    setattr(pac, fault, 1)
    system = start_worker(settings_override=configure())
    payment_id = await insert_payment(db)

    system.broker.get_actor("stamp_invoice").send(payment_id)

    await smtp.wait_for_async(1, timeout=30)
    invoice = await invoice_of(db, payment_id)
    assert invoice is not None and invoice.status == "stamped" and invoice.attempts == 2
    assert list(pac.stamps) == [invoice.uuid]
    assert invoice.failure_code is None


async def test_refused_receiver_rfc_is_dead_lettered_shown_and_retried_after_a_fix(
    db: asyncpg.Connection, configure, start_worker, pac: StandInSW, smtp: SmtpStandin
) -> None:
    settings = configure()
    system = start_worker(settings_override=settings)
    payment_id = await insert_payment(db, rfc=UNREGISTERED_RFC)

    system.broker.get_actor("stamp_invoice").send(payment_id)

    async def dead() -> bool:
        return await dead_letters(settings) == 1

    await wait_for(dead, timeout=30)
    invoice = await invoice_of(db, payment_id)
    assert invoice is not None and invoice.status == "failed" and invoice.uuid is None
    assert (invoice.failure_source, invoice.failure_code) == ("pac", "CFDI40143")
    assert len(stamp_calls(pac)) == 1 and pac.stamps == {}

    shown = await run_cli(settings, "invoices", "show", str(invoice.id))
    assert shown.exit_code == 0, shown.output
    assert "PAC code" in shown.output and "CFDI40143" in shown.output
    assert "RFC del receptor no existe" in shown.output
    listed = await run_cli(settings, "invoices", "list", "--status", "failed")
    assert "CFDI40143" in listed.output

    await db.execute(
        "UPDATE payments SET metadata = metadata || $2::jsonb WHERE id = $1",
        payment_id,
        {"rfc": RECEIVER_RFC},
    )
    retried = await run_cli(settings, "invoices", "retry", str(invoice.id))
    assert retried.exit_code == 0 and "stamping published" in retried.output, retried.output

    await smtp.wait_for_async(1, timeout=30)
    fixed = await invoice_of(db, payment_id)
    assert fixed is not None and fixed.status == "stamped" and fixed.receiver_rfc == RECEIVER_RFC
    assert fixed.folio == invoice.folio and fixed.failure_code is None
    assert list(pac.stamps) == [fixed.uuid]


async def test_expired_csd_is_refused_before_calling_the_pac(
    db: asyncpg.Connection, configure, start_worker, pac: StandInSW, ca: CertificateAuthority
) -> None:
    settings = configure(make_expired_csd(ca))
    system = start_worker(settings_override=settings)
    payment_id = await insert_payment(db)

    system.broker.get_actor("stamp_invoice").send(payment_id)

    async def dead() -> bool:
        return await dead_letters(settings) == 1

    await wait_for(dead, timeout=30)
    invoice = await invoice_of(db, payment_id)
    assert invoice is not None and invoice.status == "failed"
    assert (invoice.failure_source, invoice.failure_code) == ("csd", "CSD_EXPIRED")
    assert "renew it" in (invoice.failure_message or "")
    assert invoice.signed_xml is None and invoice.attempts == 0
    assert pac.received == []


async def test_refund_marks_the_stamped_invoice_for_cancellation(
    db: asyncpg.Connection, configure, start_worker, smtp: SmtpStandin
) -> None:
    settings = configure()
    system = start_worker(settings_override=settings)
    payment_id = await insert_payment(db)
    system.broker.get_actor("stamp_invoice").send(payment_id)
    await smtp.wait_for_async(1, timeout=30)

    system.broker.get_actor("cancel_invoice").send(payment_id)

    async def cancelled() -> InvoiceRecord | None:
        invoice = await invoice_of(db, payment_id)
        return (
            invoice if invoice is not None and invoice.status == "cancellation_requested" else None
        )

    invoice = await wait_for(cancelled)
    assert invoice.uuid is not None and invoice.cancel_requested_at is not None
    refused = await run_cli(settings, "invoices", "retry", str(invoice.id))
    assert refused.exit_code == 1 and "cancellation requested" in refused.output


async def test_check_csd_reports_and_warns_before_expiry(
    configure, ca: CertificateAuthority, csd: CsdFiles
) -> None:
    healthy = await run_cli(configure(), "invoices", "check-csd")
    assert healthy.exit_code == 0, healthy.output
    assert ISSUER_RFC in healthy.output and csd.certificate_number in healthy.output
    assert csd.not_after.isoformat() in healthy.output

    expiring = make_csd(ca, not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=10))
    warned = await run_cli(configure(expiring), "invoices", "check-csd")
    assert warned.exit_code == 1
    assert "expires in 9 days" in warned.output

    expired = await run_cli(configure(make_expired_csd(ca)), "invoices", "check-csd")
    assert expired.exit_code == 1 and "not valid now" in expired.output


async def test_payment_reversed_before_stamping_is_never_invoiced(
    db: asyncpg.Connection, configure, start_worker, pac: StandInSW
) -> None:
    settings = configure()
    payment_id = await insert_payment(db)
    await db.execute("UPDATE payments SET status = 'refunded' WHERE id = $1", payment_id)
    system = start_worker(settings_override=settings)

    system.broker.get_actor("stamp_invoice").send(payment_id)

    async def drained() -> bool:
        return await asyncio.to_thread(queue_counts, settings.queue_prefix + "stamping") == (
            0,
            0,
            0,
        )

    await wait_for(drained)
    await asyncio.to_thread(system.worker.join)
    assert await invoice_of(db, payment_id) is None
    assert pac.received == []


async def test_csd_expiry_job_sets_the_days_left_gauge(configure, ca: CertificateAuthority) -> None:
    expiring = make_csd(ca, not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=12))

    await watch_csd(SimpleNamespace(settings=configure(expiring)))  # type: ignore[arg-type]

    assert REGISTRY.get_sample_value("colmena_csd_days_left") == 11


async def test_refused_invoice_email_dead_letters_at_once_and_a_deferred_one_is_retried(
    db: asyncpg.Connection, configure, start_worker, smtp: SmtpStandin
) -> None:
    settings = configure(max_retries=8)
    system = start_worker(settings_override=settings)
    stamp = system.broker.get_actor("stamp_invoice")

    smtp.reply = "550 5.1.1 mailbox unavailable"
    refused = await insert_payment(db)
    stamp.send(refused)

    async def dead() -> bool:
        return await dead_letters(settings) == 1

    await wait_for(dead, timeout=30)
    invoice = await invoice_of(db, refused)
    assert invoice is not None and invoice.status == "stamped" and invoice.emailed_at is None
    assert smtp.refusals == 1  # a 5xx is permanent: no retry

    smtp.reply = "451 4.3.0 try later"
    deferred = await insert_payment(db)
    stamp.send(deferred)

    async def retried() -> bool:
        return smtp.refusals >= 3

    await wait_for(retried, timeout=30)
    smtp.reply = None
    [mail] = await smtp.wait_for_async(1, timeout=30)
    emailed = await invoice_of(db, deferred)
    assert emailed is not None and mail.rcpt_tos == [CUSTOMER]
    assert await dead_letters(settings) == 1


async def test_shared_clients_are_made_once_per_resources_and_closed_with_them(
    configure,
) -> None:
    settings = configure()

    def resources() -> Resources:
        return Resources(
            settings,
            database_url=settings.require_database_url(),
            publisher=AmqpPublisher(settings.require_broker_url(), settings.queue_prefix),
        )

    first, second = resources(), resources()
    closed: list[object] = []

    async def close_later(client: object) -> None:
        closed.append(client)

    probes = [
        SharedClient("sync-probe", lambda _: object(), close=closed.append),
        SharedClient("async-probe", lambda _: object(), close=close_later),
    ]
    keys: list[SharedClient[Any]] = [CSD_SIGNER, PAC_GATEWAY, MAILER, *probes]
    made = {key: first.shared(key) for key in keys}
    for key in keys:
        assert first.shared(key) is made[key] and second.shared(key) is not made[key]

    await first.close()
    await second.close()

    assert closed[:2] == [made[probes[1]], made[probes[0]]]  # newest first
    assert all(first.shared(key) is not made[key] for key in keys)  # a fresh one after close
    await first.close()


async def dead_letter_line(logs: LogCapture, actor: str) -> dict[str, Any] | None:
    lines = [json.loads(line) for line in logs.text().splitlines() if line.startswith("{")]
    found = [
        line
        for line in lines
        if line.get("event") == "message dead-lettered" and line.get("actor") == actor
    ]
    return found[0] if found else None


async def test_unconfigured_stamping_dead_letters_with_a_hint(
    db: asyncpg.Connection, settings: Settings, start_worker
) -> None:
    """What an operator reads on the console names what to set."""
    system = start_worker(settings_override=settings)
    with capture_logs() as logs:
        system.broker.get_actor("stamp_invoice").send(await insert_payment(db))
        line = await wait_for(lambda: dead_letter_line(logs, "stamp_invoice"), timeout=30)
    assert line["reason"] == "StampingNotConfigured"
    assert "COLMENA_CFDI_ISSUER_RFC" in line["error"]
    assert line["hint"].startswith("stamping is not configured: set COLMENA_CFDI_CSD_CER_PATH")
    assert line["hint"].endswith("(`colmena check` lists them)")


async def test_unconfigured_mail_dead_letters_with_a_hint(
    db: asyncpg.Connection, configure, start_worker
) -> None:
    system = start_worker(settings_override=configure(smtp_host=None, env="production"))
    with capture_logs() as logs:
        system.broker.get_actor("stamp_invoice").send(await insert_payment(db))
        line = await wait_for(lambda: dead_letter_line(logs, "deliver_invoice"), timeout=30)
    assert line["reason"] == "MailerNotConfigured"
    assert "set COLMENA_SMTP_HOST" in line["hint"]


async def delivery_locked(db: asyncpg.Connection, invoice_id: int) -> bool:
    """Whether a `deliver_invoice` holds the invoice's advisory lock (it spans the render)."""
    return bool(
        await db.fetchval(
            """
            SELECT count(*) FROM pg_locks
            WHERE locktype = 'advisory' AND objsubid = 2 AND classid::bigint = $1
                AND objid::bigint = $2 AND granted
            """,
            DELIVERY_LOCK,
            invoice_id,
        )
    )


async def test_a_render_process_killed_mid_render_is_survived_and_the_invoice_emailed_once(
    db: asyncpg.Connection, configure, start_worker, smtp: SmtpStandin
) -> None:
    settings = configure(pdf_processes=1)
    system = start_worker(settings_override=settings, threads=1)
    stamp = system.broker.get_actor("stamp_invoice")
    with capture_logs() as logs:
        stamp.send(await insert_payment(db))
        await smtp.wait_for_async(1, timeout=60)
        [first] = await wait_for(lambda: log_lines(logs, "invoice PDF rendered"))
        assert first["render_pid"] != os.getpid()
        os.kill(first["render_pid"], signal.SIGSTOP)  # the next render waits in it

        payment_id = await insert_payment(db)
        stamp.send(payment_id)

        async def rendering() -> bool:
            invoice = await invoice_of(db, payment_id)
            return invoice is not None and await delivery_locked(db, invoice.id)

        await wait_for(rendering, timeout=30)
        os.kill(first["render_pid"], signal.SIGKILL)

        mails = await smtp.wait_for_async(2, timeout=60)
        [died] = await wait_for(
            lambda: log_lines(logs, "a PDF render process died: its pool is replaced")
        )
        rendered = await wait_for(lambda: log_lines(logs, "invoice PDF rendered"))

    async def emailed() -> InvoiceRecord | None:
        invoice = await invoice_of(db, payment_id)
        return invoice if invoice is not None and invoice.emailed_at is not None else None

    invoice = await wait_for(emailed)

    async def drained() -> bool:
        counts = await asyncio.to_thread(queue_counts, settings.queue_prefix + "stamping")
        return counts[:2] == (0, 0)

    await wait_for(drained)
    assert invoice.pdf_path
    assert len(smtp.messages) == 2 and mails[1].rcpt_tos == [CUSTOMER]
    attached = {
        part.get_filename(): part.get_content() for part in mails[1].message.iter_attachments()
    }
    assert attached[f"{invoice.label}_{invoice.uuid}.pdf"] == Path(invoice.pdf_path).read_bytes()
    assert [line["invoice_id"] for line in rendered] == [first["invoice_id"], invoice.id]
    assert rendered[1]["render_pid"] not in (first["render_pid"], os.getpid())
    assert died["level"] == "warning"
    assert await dead_letters(settings) == 0


async def log_lines(logs: LogCapture, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in logs.text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


class RefusingRenderer:
    """A renderer that fails the test if anything asks it for a PDF."""

    async def render(self, stamped_xml: bytes) -> None:
        raise AssertionError("the PDF was rendered again")


def files_under(root: Path) -> dict[str, bytes]:
    return {p.suffix: p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_a_worker_on_another_host_emails_the_stored_pdf_without_rendering_it(
    db: asyncpg.Connection, configure, start_worker, smtp: SmtpStandin, tmp_path: Path
) -> None:
    """Host A stamps, renders and keeps the PDF, then the mail server refuses the email. A
    worker on host B, whose export directory is empty and which never saw A's files, delivers
    it again: it sends the stored PDF and renders nothing."""
    host_a = configure(cfdi_storage_dir=tmp_path / "host-a", env="production")
    system = start_worker(settings_override=host_a)
    smtp.reply = "550 5.1.1 mailbox unavailable"
    payment_id = await insert_payment(db)
    system.broker.get_actor("stamp_invoice").send(payment_id)

    async def dead() -> bool:
        return await dead_letters(host_a) == 1

    await wait_for(dead, timeout=30)
    invoice = await invoice_of(db, payment_id)
    assert invoice is not None and invoice.emailed_at is None
    assert invoice.pdf is not None and invoice.pdf.startswith(b"%PDF-")
    assert files_under(tmp_path / "host-a") == {".xml": invoice.stamped_xml, ".pdf": invoice.pdf}

    smtp.reply = None
    host_b = configure(cfdi_storage_dir=tmp_path / "host-b", env="production")
    resources = Resources(
        host_b,
        database_url=host_b.require_database_url(),
        publisher=AmqpPublisher("amqp://x@127.0.0.1:1/", ""),
    )
    await resources.start()
    try:
        await deliver(
            resources.pool,
            invoice.id,
            mailer=resources.shared(MAILER),
            renderer=RefusingRenderer(),
            storage=host_b.cfdi_storage_path,
            issuer_name=ISSUER_NAME,
        )
    finally:
        await resources.close()
    [mail] = await smtp.wait_for_async(1)
    attached = {part.get_filename(): part.get_content() for part in mail.message.iter_attachments()}
    assert attached[f"{invoice.label}_{invoice.uuid}.pdf"] == invoice.pdf
    assert files_under(tmp_path / "host-b") == {".xml": invoice.stamped_xml, ".pdf": invoice.pdf}
    delivered = await invoice_of(db, payment_id)
    assert delivered is not None and delivered.emailed_at is not None
    assert delivered.pdf_path is not None and delivered.pdf_path.startswith(
        str(tmp_path / "host-b")
    )


async def test_without_an_export_directory_no_file_is_written_and_the_pdf_is_kept(
    db: asyncpg.Connection, configure, start_worker, smtp: SmtpStandin, settings: Settings
) -> None:
    production = configure(env="production")
    assert production.cfdi_storage_path is None
    system = start_worker(settings_override=production)
    payment_id = await insert_payment(db)
    system.broker.get_actor("stamp_invoice").send(payment_id)
    [mail] = await smtp.wait_for_async(1, timeout=30)

    async def emailed() -> InvoiceRecord | None:
        invoice = await invoice_of(db, payment_id)
        return invoice if invoice is not None and invoice.emailed_at is not None else None

    invoice = await wait_for(emailed, timeout=30)
    assert (invoice.xml_path, invoice.pdf_path) == (None, None)
    assert invoice.pdf is not None
    attached = {part.get_filename(): part.get_content() for part in mail.message.iter_attachments()}
    assert attached[f"{invoice.label}_{invoice.uuid}.pdf"] == invoice.pdf
    assert not (settings.data_dir / "invoices").exists()


async def test_a_held_invoice_is_neither_stamped_nor_emailed_until_released(
    db: asyncpg.Connection, configure, start_worker, pac: StandInSW, smtp: SmtpStandin
) -> None:
    """A dispute holds the invoice (store.invoices.hold); the stamper leaves it alone until the
    hold is released (a won dispute), then stamps and emails it as usual."""
    settings = configure()
    disputed, other = await insert_payment(db), await insert_payment(db)
    await invoices.create(db, payment_id=disputed, issuer_rfc=ISSUER_RFC, series="A")
    await invoices.hold(db, disputed, "stripe payment disputed")
    # One thread: the second message runs only after the first is done with.
    system = start_worker(settings_override=settings, threads=1)
    stamp = system.broker.get_actor("stamp_invoice")
    stamp.send(disputed)
    stamp.send(other)
    await smtp.wait_for_async(1, timeout=30)
    held = await invoice_of(db, disputed)
    assert held is not None and held.uuid is None and held.signed_xml is None
    assert len(pac.stamps) == 1

    await invoices.release(db, disputed)
    stamp.send(disputed)
    await smtp.wait_for_async(2, timeout=30)
    released = await invoice_of(db, disputed)
    assert released is not None and released.uuid in pac.stamps
    assert len(pac.stamps) == 2
