"""Credit notes (CFDI de Egreso) for refunds: the rules, the document against the SAT schemas,
the provider events that ask for them, and the whole way through a real worker on RabbitMQ and
PostgreSQL with the SW stand-in PAC and the SMTP stand-in."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree
from satcfdi.transform import xslt_transform

from colmena.actors.credit_notes import resume_deferred_credit_notes
from colmena.domain.credit_notes import (
    CreditNoteRefused,
    FullRefund,
    RefundDecision,
    credit_note_for,
    decide_refund,
)
from colmena.domain.invoicing import ConceptDefaults, Issuer, Receiver
from colmena.domain.payment_events import (
    PaymentUpdate,
    RefundUpdate,
    interpret_mercadopago,
    interpret_stripe,
)
from colmena.gateways import sample_events as events
from colmena.gateways.cfdi import TFD, load_signer, sign_credit_note, validate_xml
from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.resources import Resources
from colmena.store import credit_notes, invoices
from colmena.store.invoices import InvoiceRecord
from tests.conftest import queue_counts, wait_for
from tests.payments_support import LICENSE_METADATA, mercadopago_post_args, payment_status
from tests.standins.csd import ISSUER_NAME, ISSUER_RFC, RECEIVER_NAME, RECEIVER_RFC, CsdFiles
from tests.standins.mercadopago import payment_object
from tests.standins.pac import StandInSW
from tests.standins.smtp import SmtpStandin
from tests.test_payments_settle import (  # noqa: F401
    mp_api,
    pay_settings,
    post_stripe,
    processed,
    system,
)
from tests.test_stamping import (  # noqa: F401
    CUSTOMER,
    ca,
    configure,
    csd,
    insert_payment,
    pac,
    run_cli,
    sat_files,
    smtp,
)

CFDI = "{http://www.sat.gob.mx/cfd/4}"
ISSUER = Issuer(rfc=ISSUER_RFC, name=ISSUER_NAME, regime="601", postal_code="42501")
DEFAULTS = ConceptDefaults(
    product_key="81112100", unit_key="E48", payment_form="04", iva_rate=Decimal("0.16")
)
RELATED = "6F4B8E1A-1111-4222-8333-444455556666"


# The rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credited", "refunded", "policy", "expected"),
    [
        (0, 30_000, FullRefund.CANCEL, RefundDecision(credit_minor=30_000)),
        (30_000, 50_000, FullRefund.CANCEL, RefundDecision(credit_minor=20_000)),
        # a figure already covered (a duplicate, or an older event arriving late)
        (50_000, 30_000, FullRefund.CANCEL, RefundDecision(credit_minor=0)),
        (50_000, 50_000, FullRefund.CANCEL, RefundDecision(credit_minor=0)),
        # the whole amount: cancelled by policy, unless a note already relates to the invoice
        (0, 100_000, FullRefund.CANCEL, RefundDecision(credit_minor=0, cancel=True)),
        (0, 100_000, FullRefund.CREDIT_NOTE, RefundDecision(credit_minor=100_000)),
        (30_000, 100_000, FullRefund.CANCEL, RefundDecision(credit_minor=70_000)),
    ],
)
def test_a_refund_credits_what_is_not_credited_yet(
    credited: int, refunded: int, policy: FullRefund, expected: RefundDecision
) -> None:
    decision = decide_refund(
        billed_minor=100_000, credited_minor=credited, refunded_minor=refunded, policy=policy
    )
    assert decision == expected


def test_a_credit_over_the_remaining_amount_is_refused_clearly() -> None:
    with pytest.raises(CreditNoteRefused, match="over the 70000 remaining of the 100000"):
        decide_refund(
            billed_minor=100_000,
            credited_minor=30_000,
            refunded_minor=100_001,
            policy=FullRefund.CREDIT_NOTE,
        )


def _payment(**metadata: str) -> SimpleNamespace:
    return SimpleNamespace(
        amount_minor=129_900,
        currency="mxn",
        customer_email=CUSTOMER,
        product_ref="colmena-pro",
        product_kind="license",
        metadata={"edition": "pro", **metadata},
    )


def _receiver(regime: str = "601") -> Receiver:
    return Receiver(
        rfc=RECEIVER_RFC, name=RECEIVER_NAME, regime=regime, postal_code="86991", cfdi_use="G03"
    )


def test_the_egreso_is_schema_valid_related_to_its_invoice_and_its_sello_verifies(
    csd: CsdFiles,  # noqa: F811
) -> None:
    note = credit_note_for(
        _payment(),
        amount_minor=30_000,
        related_uuid=RELATED,
        receiver=_receiver(),
        payment_form="04",
        issuer=ISSUER,
        series="NC",
        folio=7,
        defaults=DEFAULTS,
    )
    signed = sign_credit_note(note, load_signer(csd.certificate, csd.key, csd.password))

    validate_xml(signed.xml)
    root = etree.fromstring(signed.xml)
    assert root.attrib["TipoDeComprobante"] == "E"
    assert (root.attrib["Serie"], root.attrib["Folio"]) == ("NC", "7")
    assert (root.attrib["MetodoPago"], root.attrib["FormaPago"]) == ("PUE", "04")
    [relation] = root.findall(f"{CFDI}CfdiRelacionados")
    assert relation.attrib["TipoRelacion"] == "01"
    assert [r.attrib["UUID"] for r in relation] == [RELATED]
    receptor = root.find(f"{CFDI}Receptor")
    assert receptor is not None
    assert (receptor.attrib["Rfc"], receptor.attrib["UsoCFDI"]) == (RECEIVER_RFC, "G02")
    [concept] = root.findall(f"{CFDI}Conceptos/{CFDI}Concepto")
    assert (concept.attrib["ClaveProdServ"], concept.attrib["ClaveUnidad"]) == (
        "84111506",
        "ACT",
    )
    # 300.00 refunded, IVA included: base 258.62 + IVA 41.38, as the charge was split
    assert (root.attrib["SubTotal"], root.attrib["Total"]) == ("258.62", "300.00")
    totals = root.find(f"{CFDI}Impuestos")
    assert totals is not None and totals.attrib["TotalImpuestosTrasladados"] == "41.38"
    certificate = x509.load_der_x509_certificate(base64.b64decode(root.attrib["Certificado"]))
    cadena = str(xslt_transform(root.tag, "4.0")(root)).encode()
    key = certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(base64.b64decode(root.attrib["Sello"]), cadena, padding.PKCS1v15(), hashes.SHA256())


def test_a_receiver_whose_regime_excludes_g02_gets_s01(csd: CsdFiles) -> None:  # noqa: F811
    note = credit_note_for(
        _payment(),
        amount_minor=10_000,
        related_uuid=RELATED,
        receiver=_receiver(regime="605"),
        payment_form="03",
        issuer=ISSUER,
        series="NC",
        folio=1,
        defaults=DEFAULTS,
    )
    assert note.invoice.receiver.cfdi_use == "S01"
    validate_xml(sign_credit_note(note, load_signer(csd.certificate, csd.key, csd.password)).xml)


def test_a_credit_note_of_nothing_is_refused() -> None:
    with pytest.raises(CreditNoteRefused, match="credits nothing"):
        credit_note_for(
            _payment(),
            amount_minor=0,
            related_uuid=RELATED,
            receiver=_receiver(),
            payment_form="04",
            issuer=ISSUER,
            series="NC",
            folio=1,
            defaults=DEFAULTS,
        )


# The provider events that ask for one -----------------------------------------------------


def test_stripe_partial_and_whole_refunds_report_the_cumulative_refund() -> None:
    partial = events.stripe_event(
        "charge.refunded", events.charge(payment_intent_id="pi_1", refunded_amount=30_000)
    )
    whole = events.stripe_event("charge.refunded", events.charge(payment_intent_id="pi_1"))

    read = interpret_stripe(partial)
    assert isinstance(read, RefundUpdate)
    assert (read.provider_payment_id, read.refunded_minor) == ("pi_1", 30_000)
    read = interpret_stripe(whole)
    assert isinstance(read, PaymentUpdate)
    assert (read.status.value, read.refunded_minor) == ("refunded", 150_000)


def test_mercadopago_partial_refund_keeps_approved_and_reports_the_refund() -> None:
    partial = payment_object(amount=Decimal("1500.00"))
    partial["transaction_amount_refunded"] = 250.5
    whole = payment_object(status="refunded", amount=Decimal("1500.00"))
    whole.pop("transaction_amount_refunded", None)

    read = interpret_mercadopago(partial)
    assert isinstance(read, PaymentUpdate)
    assert (read.status.value, read.refunded_minor) == ("approved", 25_050)
    read = interpret_mercadopago(whole)
    assert isinstance(read, PaymentUpdate)
    assert (read.status.value, read.refunded_minor) == ("refunded", 150_000)


# End to end -------------------------------------------------------------------------------


async def _stamped_invoice(db: asyncpg.Connection, worker, payment_id: int) -> InvoiceRecord:
    worker.broker.get_actor("stamp_invoice").send(payment_id)

    async def emailed() -> InvoiceRecord | None:
        invoice = await invoices.get_by_payment(db, payment_id)
        return invoice if invoice is not None and invoice.emailed_at is not None else None

    found: InvoiceRecord = await wait_for(emailed, timeout=30)
    return found


async def _note_emailed(
    db: asyncpg.Connection, payment_id: int, refunded: int
) -> InvoiceRecord | None:
    note = await credit_notes.for_refund(db, payment_id, refunded)
    return note if note is not None and note.emailed_at is not None else None


async def _drained(settings) -> bool:
    counts = await asyncio.to_thread(queue_counts, settings.queue_prefix + "stamping")
    return counts[:2] == (0, 0)


async def test_partial_refunds_are_credited_stamped_and_emailed_once_each(
    db: asyncpg.Connection,
    configure,  # noqa: F811
    start_worker,
    pac: StandInSW,  # noqa: F811
    smtp: SmtpStandin,  # noqa: F811
) -> None:
    settings = configure()
    worker = start_worker(settings_override=settings, threads=2)
    payment_id = await insert_payment(db, amount_minor=129_900)
    invoice = await _stamped_invoice(db, worker, payment_id)
    credit = worker.broker.get_actor("issue_credit_note")

    credit.send(payment_id, 30_000)
    credit.send(payment_id, 30_000)  # the same refund event delivered twice
    first = await wait_for(lambda: _note_emailed(db, payment_id, 30_000), timeout=30)
    credit.send(payment_id, 10_000)  # an older figure arriving late: already covered
    # The rest of the charge: a second note, not a cancellation (a note relates to the invoice).
    credit.send(payment_id, 129_900)
    second = await wait_for(lambda: _note_emailed(db, payment_id, 129_900), timeout=30)
    await wait_for(lambda: _drained(settings))
    await asyncio.to_thread(worker.worker.join)

    assert [n.id for n in await credit_notes.of_payment(db, payment_id)] == [first.id, second.id]
    assert (first.total, second.total) == (Decimal("300.00"), Decimal("999.00"))
    assert first.total + second.total == invoice.total
    assert (first.series, first.folio, second.folio) == ("NC", 1, 2)
    for note in (first, second):
        assert note.status == "stamped" and note.stamped_xml is not None
        validate_xml(note.stamped_xml)
        root = etree.fromstring(note.stamped_xml)
        assert root.attrib["TipoDeComprobante"] == "E"
        relation = root.find(f"{CFDI}CfdiRelacionados")
        assert relation is not None and relation.attrib["TipoRelacion"] == "01"
        assert [r.attrib["UUID"] for r in relation] == [invoice.uuid]
        tfd = root.find(f".//{TFD}")
        assert tfd is not None and tfd.attrib["UUID"] == note.uuid
    assert len(pac.stamps) == 3  # the invoice and two notes, nothing twice
    mails = await smtp.wait_for_async(3)
    assert len(mails) == 3
    attached = {part.get_filename() for part in mails[-1].message.iter_attachments()}
    assert f"NC1_{first.uuid}.xml" in attached or f"NC2_{second.uuid}.xml" in attached


async def test_a_credit_note_whose_pac_answer_was_lost_is_recovered_not_stamped_again(
    db: asyncpg.Connection,
    configure,  # noqa: F811
    start_worker,
    pac: StandInSW,  # noqa: F811
    smtp: SmtpStandin,  # noqa: F811
) -> None:
    worker = start_worker(settings_override=configure())
    payment_id = await insert_payment(db)
    await _stamped_invoice(db, worker, payment_id)
    pac.drop_next = 1

    worker.broker.get_actor("issue_credit_note").send(payment_id, 50_000)

    note = await wait_for(lambda: _note_emailed(db, payment_id, 50_000), timeout=60)
    assert note.recovered and note.attempts == 2
    calls = [customid for kind, customid in pac.received if kind == "stamp"]
    assert calls.count(str(note.pac_reference)) == 2
    assert len(pac.stamps) == 2


async def test_a_whole_refund_is_credited_when_the_setting_says_credit_note(
    db: asyncpg.Connection,
    configure,  # noqa: F811
    start_worker,
    pac: StandInSW,  # noqa: F811
    smtp: SmtpStandin,  # noqa: F811
) -> None:
    worker = start_worker(settings_override=configure(cfdi_full_refund="credit_note"))
    payment_id = await insert_payment(db, amount_minor=50_000)
    await _stamped_invoice(db, worker, payment_id)

    worker.broker.get_actor("issue_credit_note").send(payment_id, 50_000)

    note = await wait_for(lambda: _note_emailed(db, payment_id, 50_000), timeout=30)
    assert note.total == Decimal("500.00")
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE actor = 'cancel_invoice'") == 0


async def test_a_whole_refund_cancels_the_invoice_by_default(
    db: asyncpg.Connection,
    configure,  # noqa: F811
    start_worker,
    pac: StandInSW,  # noqa: F811
    smtp: SmtpStandin,  # noqa: F811
) -> None:
    settings = configure()
    assert settings.cfdi_full_refund == "cancel"
    worker = start_worker(settings_override=settings)
    payment_id = await insert_payment(db, amount_minor=50_000)
    await _stamped_invoice(db, worker, payment_id)

    worker.broker.get_actor("issue_credit_note").send(payment_id, 50_000)

    async def cancel_queued() -> bool:
        args = await db.fetchval("SELECT args FROM outbox WHERE actor = 'cancel_invoice'")
        return args == [payment_id]

    await wait_for(cancel_queued)
    await wait_for(lambda: _drained(settings))
    assert await credit_notes.of_payment(db, payment_id) == []
    assert len(pac.stamps) == 1


async def test_a_refund_over_the_remaining_amount_dead_letters_and_changes_nothing(
    db: asyncpg.Connection,
    configure,  # noqa: F811
    start_worker,
    pac: StandInSW,  # noqa: F811
    smtp: SmtpStandin,  # noqa: F811
) -> None:
    settings = configure()
    worker = start_worker(settings_override=settings)
    payment_id = await insert_payment(db, amount_minor=50_000)
    await _stamped_invoice(db, worker, payment_id)
    before = await db.fetchval("SELECT count(*) FROM invoices")

    worker.broker.get_actor("issue_credit_note").send(payment_id, 50_001)

    async def dead_lettered() -> bool:
        counts = await asyncio.to_thread(queue_counts, settings.queue_prefix + "stamping")
        return counts[2] == 1

    await wait_for(dead_lettered)
    assert await db.fetchval("SELECT count(*) FROM invoices") == before
    assert await credit_notes.credited_through(db, payment_id) == 0
    assert len(pac.stamps) == 1


async def test_a_refund_before_the_invoice_is_stamped_is_deferred_then_credited(
    db: asyncpg.Connection,
    configure,  # noqa: F811
    start_worker,
    pac: StandInSW,  # noqa: F811
    smtp: SmtpStandin,  # noqa: F811
) -> None:
    settings = configure()
    worker = start_worker(settings_override=settings)
    payment_id = await insert_payment(db)
    await invoices.create(db, payment_id=payment_id, issuer_rfc=ISSUER_RFC, series="A")

    worker.broker.get_actor("issue_credit_note").send(payment_id, 20_000)

    async def deferred() -> bool:
        return await db.fetchval("SELECT count(*) FROM deferred_credit_notes") == 1

    await wait_for(deferred)
    await wait_for(lambda: _drained(settings))
    scheduler = Resources(
        settings,
        database_url=settings.require_database_url(),
        publisher=AmqpPublisher(settings.require_broker_url(), settings.queue_prefix),
    )
    await scheduler.start()
    try:
        await resume_deferred_credit_notes(scheduler)  # the invoice is not stamped yet
        assert await db.fetchval("SELECT count(*) FROM deferred_credit_notes") == 1
        assert await credit_notes.of_payment(db, payment_id) == []

        invoice = await _stamped_invoice(db, worker, payment_id)
        await resume_deferred_credit_notes(scheduler)
    finally:
        await scheduler.close()

    note = await wait_for(lambda: _note_emailed(db, payment_id, 20_000), timeout=30)
    assert note.stamped_xml is not None and invoice.uuid is not None
    assert invoice.uuid.encode() in note.stamped_xml
    assert await db.fetchval("SELECT count(*) FROM deferred_credit_notes") == 0


async def test_stripe_refund_webhooks_queue_one_credit_per_cumulative_figure(
    db: asyncpg.Connection,
    system,  # noqa: F811
) -> None:
    intent = events.payment_intent(metadata=LICENSE_METADATA)
    now = int(time.time())
    await post_stripe(system, events.stripe_event("payment_intent.succeeded", intent, created=now))
    await wait_for(lambda: processed(db))
    partial = events.charge(payment_intent_id=intent["id"], refunded_amount=30_000)
    for offset in (5, 6):  # two events reporting the same cumulative refund
        await post_stripe(
            system, events.stripe_event("charge.refunded", partial, created=now + offset)
        )
    await wait_for(lambda: processed(db, 3))
    assert await payment_status(db, "stripe", intent["id"]) == "approved"
    whole = events.charge(payment_intent_id=intent["id"])
    await post_stripe(system, events.stripe_event("charge.refunded", whole, created=now + 9))
    await wait_for(lambda: processed(db, 4))

    assert await payment_status(db, "stripe", intent["id"]) == "refunded"
    payment_id = await db.fetchval("SELECT id FROM payments")
    rows = await db.fetch("SELECT actor, args FROM outbox WHERE queue = 'stamping' ORDER BY id")
    assert [(row["actor"], row["args"]) for row in rows] == [
        ("stamp_invoice", [payment_id]),
        ("issue_credit_note", [payment_id, 30_000]),
        ("issue_credit_note", [payment_id, 150_000]),
    ]


async def test_a_mercadopago_partial_refund_queues_its_credit_note_and_keeps_approved(
    db: asyncpg.Connection,
    system,  # noqa: F811
    mp_api,  # noqa: F811
) -> None:
    payment = mp_api.put(payment_object(status="approved", metadata=LICENSE_METADATA))
    notify = events.mercadopago_notification(str(payment["id"]))
    response = await system.post("/webhooks/mercadopago", **mercadopago_post_args(notify))
    assert response.status == 200
    await wait_for(lambda: processed(db))
    later = payment_object(
        payment_id=payment["id"],
        status="approved",
        metadata=LICENSE_METADATA,
        updated=datetime.now(UTC) + timedelta(minutes=1),
    )
    later["status_detail"] = "partially_refunded"
    later["transaction_amount_refunded"] = 400.0
    mp_api.put(later)
    notify = events.mercadopago_notification(str(payment["id"]))
    response = await system.post("/webhooks/mercadopago", **mercadopago_post_args(notify))
    assert response.status == 200
    await wait_for(lambda: processed(db, 2))

    payment_id = await db.fetchval("SELECT id FROM payments")
    assert await payment_status(db, "mercadopago", str(payment["id"])) == "approved"
    rows = await db.fetch("SELECT actor, args FROM outbox WHERE queue = 'stamping' ORDER BY id")
    assert [(row["actor"], row["args"]) for row in rows] == [
        ("stamp_invoice", [payment_id]),
        ("issue_credit_note", [payment_id, 40_000]),
    ]


async def test_retrying_a_refused_credit_note_queues_its_refund_again(
    db: asyncpg.Connection,
    configure,  # noqa: F811
) -> None:
    """`colmena invoices retry` on a refused Egreso re-seals it through `issue_credit_note`
    (its refund), not through the Ingreso's `stamp_invoice`."""
    payment_id = await insert_payment(db)
    async with db.transaction():
        note = await credit_notes.create(
            db,
            payment_id=payment_id,
            issuer_rfc=ISSUER_RFC,
            series="NC",
            related_uuid=str(uuid.uuid4()),
            refunded_through_minor=5_000,
            credit=Decimal("50.00"),
        )
    await db.execute(
        "UPDATE invoices SET status = 'failed', failure_code = 'CFDI40143' WHERE id = $1", note.id
    )
    result = await run_cli(configure(), "invoices", "retry", str(note.id))
    assert result.exit_code == 0, result.output
    assert "credit note" in result.output
    rows = await db.fetch("SELECT actor, args FROM outbox WHERE queue = 'stamping'")
    assert [(row["actor"], row["args"]) for row in rows] == [
        ("issue_credit_note", [payment_id, 5_000])
    ]
    refreshed = await invoices.get(db, note.id)
    assert refreshed is not None and refreshed.status != "failed"
