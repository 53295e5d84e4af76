"""CFDI stamping: an approved payment with fiscal data becomes a stamped invoice, never twice.

Why it cannot stamp twice under at-least-once messages:

- The invoice row (UNIQUE payment_id, with its folio and a random PAC reference) is created
  under the payment's row lock before anything is sealed or sent.
- The sealed XML is stored on the row before the first PAC call, and a concurrent duplicate
  that sealed its own copy throws it away and uses the stored one. Every attempt therefore
  sends the PAC the same bytes under the same reference (SW's ``customid``), and the PAC's
  duplicate guard answers a repeat with the stamp it already issued (307 / CFDI3307), which
  the gateway returns as ``recovered``. A timeout or a lost answer is thus retried by asking
  again, never by sealing a new document.
- Only a definite refusal (the PAC's validation codes, an expired CSD, unusable fiscal data)
  marks the invoice failed; it goes to the dead letters with the code and message on the row.
  ``colmena invoices retry`` re-seals such an invoice, which is safe because nothing was stamped.

The PDF (~0.7 s of CPU) and the email happen in ``deliver_invoice``, queued through the outbox
in the transaction that records the stamp.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import os
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import asyncpg
import structlog
from apscheduler.triggers.interval import IntervalTrigger
from lxml import etree
from pydantic import SecretStr
from satcfdi.models import Signer

from colmena.actors.licenses import mailer_for
from colmena.config import Settings
from colmena.config.metrics import CSD_DAYS_LEFT, INVOICES
from colmena.domain.invoicing import (
    ConceptDefaults,
    FiscalDataError,
    invoice_email,
    invoice_for,
    recipient_of,
)
from colmena.errors import PermanentError
from colmena.gateways.cfdi import (
    CfdiInvalid,
    CsdError,
    CsdExpired,
    CsdInfo,
    CsdMismatch,
    Invoice,
    Issuer,
    SignedInvoice,
    inspect_csd,
    load_signer,
    render_pdf,
    sign_invoice,
)
from colmena.gateways.mail import Attachment, MailDeliveryError
from colmena.gateways.pac import (
    TFD,
    PacAmbiguous,
    PacCredentials,
    PacGateway,
    PacRejected,
    PacUnavailable,
    StampResult,
)
from colmena.runtime.outbox import publish_now
from colmena.runtime.registry import actor
from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import scheduled
from colmena.store import invoices, outbox, payments
from colmena.store.invoices import InvoiceRecord

log = structlog.get_logger(__name__)

QUEUE = "stamping"
# First key of pg_advisory_lock(int, int) for invoice deliveries ("CFDI"); the second is the id.
_DELIVERY_LOCK_SPACE = 0x43464449


class StampingNotConfigured(PermanentError):
    """Settings the stamping actor needs are unset; the message names them."""


@dataclass(frozen=True)
class CsdSource:
    certificate: Path
    key: Path
    password: str


@dataclass(frozen=True)
class StampingConfig:
    issuer: Issuer
    series: str
    defaults: ConceptDefaults
    csd: CsdSource


def csd_source(settings: Settings) -> CsdSource:
    cer, key, password = (
        settings.cfdi_csd_cer_path,
        settings.cfdi_csd_key_path,
        settings.cfdi_csd_password,
    )
    if cer is None or key is None or password is None:
        unset = [
            name
            for name, value in (("CER_PATH", cer), ("KEY_PATH", key), ("PASSWORD", password))
            if value is None
        ]
        raise StampingNotConfigured(
            f"CFDI stamping needs {', '.join('COLMENA_CFDI_CSD_' + n for n in unset)}"
        )
    return CsdSource(cer, key, password.get_secret_value())


def stamping_config(settings: Settings) -> StampingConfig:
    issuer_fields = {
        "COLMENA_CFDI_ISSUER_RFC": settings.cfdi_issuer_rfc,
        "COLMENA_CFDI_ISSUER_NAME": settings.cfdi_issuer_name,
        "COLMENA_CFDI_ISSUER_REGIME": settings.cfdi_issuer_regime,
        "COLMENA_CFDI_ISSUER_POSTAL_CODE": settings.cfdi_issuer_postal_code,
    }
    missing = [name for name, value in issuer_fields.items() if not value]
    if missing:
        raise StampingNotConfigured(f"CFDI stamping needs {', '.join(missing)}")
    rfc, name, regime, postal_code = (str(value) for value in issuer_fields.values())
    return StampingConfig(
        issuer=Issuer(rfc=rfc, name=name, regime=regime, postal_code=postal_code),
        series=settings.cfdi_series,
        defaults=ConceptDefaults(
            product_key=settings.cfdi_product_key,
            unit_key=settings.cfdi_unit_key,
            payment_form=settings.cfdi_payment_form,
            iva_rate=settings.cfdi_iva_rate,
        ),
        csd=csd_source(settings),
    )


def read_csd_certificate(source: CsdSource) -> CsdInfo:
    """What `check-csd` and the expiry job report; CsdError when the file is unusable."""
    try:
        return inspect_csd(source.certificate.read_bytes())
    except OSError as exc:
        raise CsdError(f"cannot read {source.certificate}: {exc.strerror}") from None


@functools.lru_cache(maxsize=4)
def _cached_signer(source: CsdSource, cer_mtime: int, key_mtime: int) -> Signer:
    return load_signer(source.certificate.read_bytes(), source.key.read_bytes(), source.password)


def signer_for(source: CsdSource) -> Signer:
    """The CSD, loaded once per process and again when a file changes (renewal)."""
    try:
        return _cached_signer(
            source, source.certificate.stat().st_mtime_ns, source.key.stat().st_mtime_ns
        )
    except OSError as exc:
        raise CsdError(f"cannot read the CSD files: {exc.strerror} ({exc.filename})") from None


_gateways: dict[tuple[object, ...], PacGateway] = {}


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def pac_gateway(settings: Settings) -> PacGateway:
    """One gateway per PAC configuration and process, so SW's token is reused between calls."""
    credentials = PacCredentials(
        user=settings.pac_user,
        password=_reveal(settings.pac_password),
        token=_reveal(settings.pac_token),
        contract=settings.pac_contract,
        client_id=settings.pac_client_id,
        issuer_rfc=settings.cfdi_issuer_rfc,
    )
    key = (
        settings.pac_provider,
        settings.pac_environment,
        settings.pac_base_url,
        settings.pac_api_url,
        settings.pac_timeout_seconds,
        credentials,
    )
    gateway = _gateways.get(key)
    if gateway is None:
        gateway = _gateways[key] = PacGateway(
            settings.pac_provider,
            settings.pac_environment,
            credentials=credentials,
            timeout=settings.pac_timeout_seconds,
            base_url=settings.pac_base_url,
            api_url=settings.pac_api_url,
        )
    return gateway


# -- stamp_invoice ------------------------------------------------------------------------


@actor(queue=QUEUE, name="stamp_invoice")
async def stamp_invoice(resources: Resources, payment_id: int) -> None:
    """Have the payment's invoice sealed and stamped; a no-op once it is."""
    config = stamping_config(resources.settings)
    bound = log.bind(payment_id=payment_id)
    invoice = await _open_invoice(resources.pool, payment_id, config)
    if invoice is None:
        bound.info("payment no longer approved and never invoiced: nothing to stamp")
        return
    bound = bound.bind(invoice_id=invoice.id, folio=invoice.label)
    if invoice.uuid is not None:
        bound.info("invoice already stamped", uuid=invoice.uuid)
        return
    if invoice.status == "failed":
        bound.info(
            "invoice was refused; `colmena invoices retry` re-seals it", code=invoice.failure_code
        )
        return
    if invoice.status == "cancellation_requested" and invoice.attempts == 0:
        bound.info("payment reversed before the invoice was sent to the PAC: not stamping")
        return
    signed_xml = invoice.signed_xml or await _seal(resources, config, invoice)
    await _stamp(resources, invoice, signed_xml)


async def _open_invoice(
    pool: asyncpg.Pool, payment_id: int, config: StampingConfig
) -> InvoiceRecord | None:
    """The payment's invoice, created (with its folio) if the payment is approved and has none."""
    async with pool.acquire() as conn, conn.transaction():
        payment = await payments.get(conn, payment_id, for_update=True)
        if payment is None:
            raise PermanentError(f"payment {payment_id} does not exist")
        invoice = await invoices.get_by_payment(conn, payment_id)
        if invoice is None and payment.status == "approved":
            invoice = await invoices.create(
                conn, payment_id=payment_id, issuer_rfc=config.issuer.rfc, series=config.series
            )
        return invoice


async def _seal(resources: Resources, config: StampingConfig, invoice: InvoiceRecord) -> bytes:
    """Build, seal and schema-check the CFDI, then keep it on the row (or the copy a concurrent
    duplicate kept first). Refusals are stored on the invoice before raising PermanentError."""
    async with resources.pool.acquire() as conn:
        payment = await payments.get(conn, invoice.payment_id)
    assert payment is not None
    try:
        document = invoice_for(
            payment,
            issuer=config.issuer,
            series=invoice.series,
            folio=invoice.folio,
            defaults=config.defaults,
        )
        signed = await asyncio.to_thread(_sign, document, config.csd)
    except CsdError as exc:
        code = {CsdExpired: "CSD_EXPIRED", CsdMismatch: "CSD_MISMATCH"}.get(
            type(exc), "CSD_INVALID"
        )
        raise await _refused(
            resources.pool, invoice, "csd", code, str(exc), outcome="csd_refused"
        ) from exc
    except (FiscalDataError, CfdiInvalid) as exc:
        raise await _refused(
            resources.pool, invoice, "data", "INVALID_DATA", str(exc), outcome="invalid_data"
        ) from exc
    async with resources.pool.acquire() as conn, conn.transaction():
        current = await invoices.get(conn, invoice.id, for_update=True)
        assert current is not None
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


def _sign(document: Invoice, source: CsdSource) -> SignedInvoice:
    """Blocking: load the CSD, report its days left, seal (refusing an expired or foreign CSD)."""
    signer = signer_for(source)
    info = inspect_csd(signer.certificate_bytes())
    CSD_DAYS_LEFT.set(info.days_left(dt.datetime.now(dt.UTC)))
    return sign_invoice(document, signer)


async def _refused(
    pool: asyncpg.Pool,
    invoice: InvoiceRecord,
    source: str,
    code: str,
    message: str,
    *,
    outcome: str,
) -> PermanentError:
    """Record a definite refusal on the invoice; returns the error that dead-letters the message."""
    async with pool.acquire() as conn:
        await invoices.mark_failed(conn, invoice.id, source=source, code=code, message=message)
    INVOICES.labels(outcome=outcome).inc()
    log.error("invoice refused", invoice_id=invoice.id, source=source, code=code, reason=message)
    return PermanentError(f"invoice {invoice.id} ({invoice.label}) refused: {code}: {message}")


async def _stamp(resources: Resources, invoice: InvoiceRecord, signed_xml: bytes) -> None:
    async with resources.pool.acquire() as conn:
        await invoices.begin_attempt(conn, invoice.id)
    gateway = pac_gateway(resources.settings)
    try:
        result = await asyncio.to_thread(
            gateway.stamp, signed_xml, reference=str(invoice.pac_reference)
        )
    except PacRejected as exc:
        message = exc.message + (f" ({exc.detail})" if exc.detail else "")
        raise await _refused(
            resources.pool, invoice, "pac", exc.code, message, outcome="rejected"
        ) from exc
    except (PacAmbiguous, PacUnavailable) as exc:
        async with resources.pool.acquire() as conn:
            await invoices.note_transient(
                conn, invoice.id, code=type(exc).__name__, message=str(exc)
            )
        INVOICES.labels(outcome="retried").inc()
        raise
    if _seal_of(signed_xml) != _tfd_seal_of(result):
        raise await _refused(
            resources.pool,
            invoice,
            "pac",
            "FOREIGN_STAMP",
            f"the PAC returned stamp {result.uuid}, which certifies another document",
            outcome="rejected",
        )
    xml_path = await asyncio.to_thread(
        _write_file,
        _file_for(resources.settings, invoice, result.uuid, result.fecha_timbrado, "xml"),
        result.xml,
    )
    async with resources.pool.acquire() as conn, conn.transaction():
        current = await invoices.get(conn, invoice.id, for_update=True)
        assert current is not None
        await invoices.mark_stamped(
            conn,
            invoice.id,
            stamped_xml=result.xml,
            uuid=result.uuid,
            fecha_timbrado=result.fecha_timbrado,
            recovered=result.recovered,
            xml_path=str(xml_path),
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
    await publish_now(resources.pool, resources.publisher, [follow_up])
    INVOICES.labels(outcome="recovered" if result.recovered else "stamped").inc()
    log.info("invoice stamped", invoice_id=invoice.id, uuid=result.uuid, recovered=result.recovered)


def _seal_of(signed_xml: bytes) -> str:
    return etree.fromstring(signed_xml).attrib["Sello"]


def _tfd_seal_of(result: StampResult) -> str | None:
    """The seal the PAC's TimbreFiscalDigital certifies: it must be ours (a reused reference
    on a shared PAC account would otherwise hand back someone else's stamp)."""
    tfd = etree.fromstring(result.xml).find(f".//{TFD}")
    return tfd.attrib.get("SelloCFD") if tfd is not None else None


def _file_for(
    settings: Settings, invoice: InvoiceRecord, uuid: str, stamped_at: dt.datetime, ext: str
) -> Path:
    return Path(
        settings.cfdi_storage_path,
        invoice.issuer_rfc,
        f"{stamped_at:%Y}",
        f"{stamped_at:%m}",
        f"{invoice.label}_{uuid}.{ext}",
    )


def _write_file(path: Path, content: bytes) -> Path:
    """Atomically (temp file + rename): a reader never sees half an invoice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    os.replace(tmp, path)
    return path


# -- deliver_invoice -----------------------------------------------------------------------


@actor(queue=QUEUE, name="deliver_invoice")
async def deliver_invoice(resources: Resources, invoice_id: int) -> None:
    """Render the PDF, file XML and PDF, and email both to the receiver, once.

    A session advisory lock on the invoice spans the SMTP call, so a duplicate message waits
    and then finds the invoice emailed. If the server accepted the mail but the process died
    before recording it, the retry sends it again: a second copy, never none.
    """
    async with resources.pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1, $2)", _DELIVERY_LOCK_SPACE, invoice_id)
        try:
            await _deliver(resources, conn, invoice_id)
        finally:
            await conn.execute(
                "SELECT pg_advisory_unlock($1, $2)", _DELIVERY_LOCK_SPACE, invoice_id
            )


async def _deliver(resources: Resources, conn: asyncpg.Connection, invoice_id: int) -> None:
    invoice = await invoices.get(conn, invoice_id)
    if invoice is None:
        raise PermanentError(f"invoice {invoice_id} does not exist")
    if invoice.stamped_xml is None or invoice.uuid is None:
        raise PermanentError(f"invoice {invoice_id} is not stamped")
    bound = log.bind(invoice_id=invoice_id, uuid=invoice.uuid)
    if invoice.status == "cancellation_requested":
        bound.info("cancellation requested: invoice not emailed")
        return
    if invoice.emailed_at is not None:
        return
    xml_path, pdf_path, pdf = await asyncio.to_thread(_files, resources.settings, invoice)
    await invoices.set_files(conn, invoice_id, xml_path=str(xml_path), pdf_path=str(pdf_path))
    if not invoice.receiver_email:
        raise PermanentError(
            f"invoice {invoice_id}: the payment has no customer email to send it to"
        )
    payment = await payments.get(conn, invoice.payment_id)
    assert payment is not None
    email = invoice_email(
        locale=payment.customer_locale or payment.metadata.get("locale"),
        issuer_name=resources.settings.cfdi_issuer_name or invoice.issuer_rfc,
        label=invoice.label,
        total=invoice.total or Decimal(0),
        currency=invoice.currency or "MXN",
        uuid=invoice.uuid,
    )
    name = f"{invoice.label}_{invoice.uuid}"
    attachments = [
        Attachment(f"{name}.xml", invoice.stamped_xml, "application/xml"),
        Attachment(f"{name}.pdf", pdf, "application/pdf"),
    ]
    try:
        message_id = await mailer_for(resources.settings).send_email(  # type: ignore[call-arg]
            invoice.receiver_email, email, attachments
        )
    except MailDeliveryError as exc:
        INVOICES.labels(outcome="email_failed").inc()
        if exc.permanent:
            raise PermanentError(f"invoice {invoice_id}: {exc}") from exc
        raise
    await invoices.mark_emailed(conn, invoice_id, message_id)
    INVOICES.labels(outcome="emailed").inc()
    bound.info("invoice emailed", email_message_id=message_id)


def _files(settings: Settings, invoice: InvoiceRecord) -> tuple[Path, Path, bytes]:
    """The XML file (rewritten if this host lacks it) and the PDF (rendered once, then read)."""
    assert (
        invoice.stamped_xml is not None
        and invoice.uuid is not None
        and invoice.fecha_timbrado is not None
    )
    xml_path = _file_for(settings, invoice, invoice.uuid, invoice.fecha_timbrado, "xml")
    if not xml_path.exists():
        _write_file(xml_path, invoice.stamped_xml)
    pdf_path = xml_path.with_suffix(".pdf")
    if pdf_path.exists():
        return xml_path, pdf_path, pdf_path.read_bytes()
    pdf = render_pdf(invoice.stamped_xml)
    _write_file(pdf_path, pdf)
    return xml_path, pdf_path, pdf


# -- cancel_invoice ------------------------------------------------------------------------


@actor(queue=QUEUE, name="cancel_invoice")
async def cancel_invoice(resources: Resources, payment_id: int) -> None:
    """Mark the invoice of a refunded or charged-back payment for cancellation.

    The cancellation itself (SAT motive 02/03, the receiver's acceptance) is done by an
    operator in the PAC's portal: colmena does not call the PAC's cancellation service.
    """
    async with resources.pool.acquire() as conn, conn.transaction():
        invoice = await invoices.get_by_payment(conn, payment_id, for_update=True)
        if invoice is None:
            log.info(
                "payment reversed before any invoice existed: nothing to cancel",
                payment_id=payment_id,
            )
            return
        if invoice.status == "cancellation_requested":
            return
        await invoices.request_cancellation(conn, invoice.id)
    INVOICES.labels(outcome="cancellation_requested").inc()
    log.warning(
        "invoice cancellation requested: cancel it in the PAC's portal",
        payment_id=payment_id,
        invoice_id=invoice.id,
        uuid=invoice.uuid,
        folio=invoice.label,
    )


# -- CSD expiry ------------------------------------------------------------------------------


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
