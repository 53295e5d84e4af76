"""CFDI 4.0 invoices: build, seal with the issuer's CSD, validate offline, render a PDF.

Everything here is CPU-bound and offline (satcfdi bundles the SAT schemas and XSLTs); the PAC
call lives in ``colmena.gateways.pac``. The CSD is checked before anything is signed so an
expired certificate fails loudly here instead of as a PAC rejection (or worse, a stamp the SAT
later voids).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_private_key
from lxml import etree
from satcfdi.cfdi import CFDI
from satcfdi.create.cfd import cfdi40
from satcfdi.exceptions import CFDIError, SchemaValidationError
from satcfdi.models import Certificate, Signer
from satcfdi.transform import SCHEMA_ROOT, SchemaCollector, cfdi_schemas
from satcfdi.utils import parser as satcfdi_parser

from colmena.domain.credit_notes import CREDIT_NOTE_RELATION, EGRESO, CreditNote
from colmena.domain.global_invoice import GlobalInvoice
from colmena.domain.invoicing import Concept, Invoice, Receiver
from colmena.errors import ColmenaError

log = structlog.get_logger(__name__)

IVA = "002"
TFD = "{http://www.sat.gob.mx/TimbreFiscalDigital}TimbreFiscalDigital"
CFDI4_NS = "http://www.sat.gob.mx/cfd/4"
# The TimbreFiscalDigital's Leyenda on a stamp from `colmena dev`'s PAC sandbox, sealed with a
# locally minted test CSD: how the PDF, the email and `colmena invoices show` know to say so.
SANDBOX_LEGEND = "SANDBOX DE COLMENA DEV: CSD DE PRUEBA, SIN VALIDEZ FISCAL"


class CsdError(ColmenaError):
    """The issuer's CSD cannot be used to seal this invoice; `code` is what the invoice keeps.

    Permanent: the same files fail the same way until an operator replaces them.
    """

    retryable = False
    code = "CSD_INVALID"


class CsdInvalid(CsdError):
    """The .cer/.key pair does not load (key of another certificate, bad file)."""


class CsdWrongPassword(CsdInvalid):
    """The .key is a CSD key, but COLMENA_CFDI_CSD_PASSWORD does not open it."""

    code = "CSD_WRONG_PASSWORD"
    hint = "set COLMENA_CFDI_CSD_PASSWORD to the password the SAT issued with this .key"


class CsdNotAKey(CsdInvalid):
    """The .key file is not a CSD private key (the SAT's is encrypted PKCS#8, DER)."""

    hint = "set COLMENA_CFDI_CSD_KEY_PATH to the .key file the SAT issued with the .cer"


class CsdExpired(CsdError):
    """The CSD is outside its validity period; the SAT would reject (or later void) the stamp."""

    code = "CSD_EXPIRED"

    def __init__(
        self,
        rfc: str,
        certificate_number: str,
        not_before: dt.datetime,
        not_after: dt.datetime,
        at: dt.datetime,
    ):
        self.rfc = rfc
        self.certificate_number = certificate_number
        self.not_before = not_before
        self.not_after = not_after
        self.at = at
        super().__init__(
            f"CSD {certificate_number} of {rfc} is valid from {not_before.isoformat()} to "
            f"{not_after.isoformat()}, not at {at.isoformat()}: renew it in the SAT portal"
        )


class CsdMismatch(CsdError):
    """The CSD belongs to another RFC than the invoice's issuer."""

    code = "CSD_MISMATCH"


class CfdiInvalid(ColmenaError):
    """The sealed document does not validate against the SAT schemas (a bug in what we built).

    Permanent: sealing the same data again builds the same invalid document.
    """

    retryable = False

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


@dataclass(frozen=True)
class CsdInfo:
    rfc: str
    legal_name: str | None
    certificate_number: str
    not_before: dt.datetime
    not_after: dt.datetime

    def is_valid_at(self, at: dt.datetime) -> bool:
        return self.not_before <= at <= self.not_after

    def days_left(self, at: dt.datetime) -> int:
        return (self.not_after - at).days


@dataclass(frozen=True)
class SignedInvoice:
    xml: bytes
    total: Decimal
    fecha: dt.datetime


def load_signer(certificate: bytes, key: bytes, password: str) -> Signer:
    """The CSD ready to seal; says which part is wrong: the password, the .key or the pair.

    The SAT issues the key as encrypted PKCS#8 (DER). Asked without a password, cryptography
    answers TypeError for such a key and ValueError for bytes that are no key at all; only a key
    known to be encrypted is then opened with the password, so a failure there is the password.
    """
    _check_key(key, password)
    try:
        x509.load_der_x509_certificate(certificate)
    except ValueError:
        raise CsdInvalid("the .cer is not a DER certificate") from None
    try:
        return Signer.load(certificate=certificate, key=key, password=password)
    except CFDIError:
        raise CsdInvalid("the .key belongs to another certificate than the .cer") from None


def _check_key(key: bytes, password: str) -> None:
    try:
        load_der_private_key(key, password=None)
    except TypeError:
        pass  # encrypted, as a CSD key is
    except ValueError:
        raise CsdNotAKey("the .key is not a CSD private key (encrypted PKCS#8, DER)") from None
    else:
        raise CsdNotAKey("the .key is not a CSD private key: it is not encrypted")
    try:
        private_key = load_der_private_key(key, password=password.encode())
    except (TypeError, ValueError):
        raise CsdWrongPassword("wrong password for the .key") from None
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise CsdNotAKey("the .key is not a CSD private key: it is not an RSA key")


def inspect_csd(certificate: bytes) -> CsdInfo:
    """The facts ``check-csd`` reports; the RFC and number are read the way the SAT writes them."""
    signer_view = Certificate.load_certificate(certificate)
    parsed = x509.load_der_x509_certificate(certificate)
    rfc = signer_view.rfc
    if rfc is None:
        raise CsdInvalid("the certificate carries no RFC (x500UniqueIdentifier): not a SAT CSD")
    return CsdInfo(
        rfc=str(rfc),
        legal_name=signer_view.legal_name,
        certificate_number=signer_view.certificate_number,
        not_before=parsed.not_valid_before_utc,
        not_after=parsed.not_valid_after_utc,
    )


def check_csd(info: CsdInfo, *, issuer_rfc: str, at: dt.datetime) -> None:
    if not info.is_valid_at(at):
        raise CsdExpired(info.rfc, info.certificate_number, info.not_before, info.not_after, at)
    if info.rfc != issuer_rfc.upper():
        raise CsdMismatch(f"the CSD belongs to {info.rfc}, the invoice is issued by {issuer_rfc}")


def _concept_taxes(invoice: Invoice, concept: Concept) -> cfdi40.Impuestos | None:
    if invoice.iva_rate is None:
        return None
    return cfdi40.Impuestos(
        traslados=cfdi40.Traslado(
            impuesto=IVA,
            tipo_factor="Tasa",
            tasa_o_cuota=invoice.iva_rate.quantize(Decimal("0.000001")),
            importe=concept.iva_amount,
        )
    )


def build_comprobante(invoice: Invoice) -> cfdi40.Comprobante:
    taxed = invoice.iva_rate is not None
    return cfdi40.Comprobante(
        emisor=cfdi40.Emisor(
            rfc=invoice.issuer.rfc,
            nombre=invoice.issuer.name,
            regimen_fiscal=invoice.issuer.regime,
        ),
        lugar_expedicion=invoice.issuer.postal_code,
        receptor=cfdi40.Receptor(
            rfc=invoice.receiver.rfc,
            nombre=invoice.receiver.name,
            domicilio_fiscal_receptor=invoice.receiver.postal_code,
            regimen_fiscal_receptor=invoice.receiver.regime,
            uso_cfdi=invoice.receiver.cfdi_use,
        ),
        conceptos=[
            cfdi40.Concepto(
                clave_prod_serv=c.product_key,
                cantidad=c.quantity,
                clave_unidad=c.unit_key,
                descripcion=c.description,
                valor_unitario=c.unit_price,
                no_identificacion=c.sku,
                impuestos=_concept_taxes(invoice, c),
                objeto_imp="02" if taxed else "01",
            )
            for c in invoice.concepts
        ],
        moneda=invoice.currency,
        serie=invoice.series,
        folio=invoice.folio,
        forma_pago=invoice.payment_form,
        metodo_pago=invoice.payment_method,
        fecha=invoice.issued_at,
    )


def sign_invoice(
    invoice: Invoice, signer: Signer, *, now: dt.datetime | None = None
) -> SignedInvoice:
    """Seal and schema-check the invoice; refuses an expired or foreign CSD before signing."""
    return seal(build_comprobante(invoice), signer, issuer_rfc=invoice.issuer.rfc, now=now)


def seal(
    comprobante: cfdi40.Comprobante,
    signer: Signer,
    *,
    issuer_rfc: str,
    now: dt.datetime | None = None,
) -> SignedInvoice:
    """Seal and schema-check a built comprobante of any type (Ingreso, Egreso, global), after
    refusing an expired or foreign CSD."""
    now = now or dt.datetime.now(dt.UTC)
    check_csd(inspect_csd(signer.certificate_bytes()), issuer_rfc=issuer_rfc, at=now)
    comprobante.sign(signer)
    root = comprobante.to_xml(include_schema_location=True)
    validate(comprobante, root)
    return SignedInvoice(
        xml=etree.tostring(root, xml_declaration=True, encoding="UTF-8"),
        total=comprobante["Total"],
        fecha=comprobante["Fecha"],
    )


def build_global_comprobante(document: GlobalInvoice) -> cfdi40.Comprobante:
    """The CFDI global: the Ingreso of its sales plus InformacionGlobal (Periodicidad, Meses,
    Año), which tells the SAT that XAXX010101000 stands for público en general."""
    comprobante = build_comprobante(document.invoice)
    comprobante["InformacionGlobal"] = cfdi40.InformacionGlobal(
        periodicidad=document.periodicity, meses=document.months, ano=document.year
    )
    return comprobante


def sign_global_invoice(
    document: GlobalInvoice, signer: Signer, *, now: dt.datetime | None = None
) -> SignedInvoice:
    """Seal and schema-check the CFDI global for público en general."""
    return seal(
        build_global_comprobante(document),
        signer,
        issuer_rfc=document.invoice.issuer.rfc,
        now=now,
    )


def sign_credit_note(
    note: CreditNote, signer: Signer, *, now: dt.datetime | None = None
) -> SignedInvoice:
    """Seal and schema-check a CFDI de Egreso, related to the CFDI it credits with TipoRelacion
    01 (nota de crédito de los documentos relacionados)."""
    comprobante = build_comprobante(note.invoice)
    comprobante["TipoDeComprobante"] = EGRESO
    comprobante["CfdiRelacionados"] = [
        cfdi40.CfdiRelacionados(
            tipo_relacion=CREDIT_NOTE_RELATION, cfdi_relacionado=note.related_uuid
        )
    ]
    return seal(comprobante, signer, issuer_rfc=note.invoice.issuer.rfc, now=now)


@dataclass(frozen=True)
class StampedTerms:
    """What a credit note copies from the CFDI it credits: its receiver and its FormaPago."""

    uuid: str
    receiver: Receiver
    payment_form: str


def stamped_terms(xml: bytes) -> StampedTerms:
    """The receiver (as the SAT holds it) and FormaPago of a stamped CFDI, and its UUID."""
    root = etree.fromstring(xml, parser=satcfdi_parser)
    receptor = root.find(f"{{{CFDI4_NS}}}Receptor")
    tfd = root.find(f".//{TFD}")
    if receptor is None or tfd is None:
        raise CfdiInvalid(["not a stamped CFDI 4.0: no Receptor or TimbreFiscalDigital"])
    return StampedTerms(
        uuid=tfd.attrib["UUID"],
        receiver=Receiver(
            rfc=receptor.attrib["Rfc"],
            name=receptor.attrib["Nombre"],
            regime=receptor.attrib["RegimenFiscalReceptor"],
            postal_code=receptor.attrib["DomicilioFiscalReceptor"],
            cfdi_use=receptor.attrib["UsoCFDI"],
        ),
        payment_form=root.attrib.get("FormaPago", "99"),
    )


_schemas = threading.local()


def _schema_for(base: frozenset[str]) -> etree.XMLSchema:
    """Compiled once per thread: satcfdi's ``validate_xsd`` recompiles (~0.2 s) on every call,
    and lxml schema objects are not documented as safe to share across threads."""
    cache: dict[frozenset[str], etree.XMLSchema] = _schemas.__dict__.setdefault("by_base", {})
    schema = cache.get(base)
    if schema is None:
        wrapper = etree.fromstring(
            '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"/>',
            base_url=f"{SCHEMA_ROOT}/schema.xsd",
            parser=satcfdi_parser,
        )
        for location in sorted(base):
            etree.SubElement(
                wrapper,
                "{http://www.w3.org/2001/XMLSchema}import",
                attrib={"namespace": "", "schemaLocation": location},
            )
        schema = cache[base] = etree.XMLSchema(wrapper)
    return schema


def validate(document: CFDI, root: etree._Element) -> None:
    """Check ``root`` against the bundled schemas of every namespace ``document`` uses."""
    collector = SchemaCollector()
    cfdi_schemas[document.tag](collector, document)
    schema = _schema_for(frozenset(collector.base))
    if not schema.validate(root):
        raise CfdiInvalid([f"line {e.line}: {e.message}" for e in schema.error_log])


def validate_xml(xml: bytes) -> None:
    """Schema-check a serialized CFDI exactly as received (no re-serialization)."""
    root = etree.fromstring(xml, parser=satcfdi_parser)
    try:
        document = CFDI.from_xml(root)
    except (KeyError, SchemaValidationError) as exc:
        raise CfdiInvalid([f"not a CFDI: {exc}"]) from exc
    validate(document, root)


# satcfdi puts a zero-width space between every character of the seals (so they wrap), and
# weasyprint's automatic table layout then measures thousands of break points: ~3.4 s a page.
# A fixed layout for the TimbreFiscalDigital table alone (the only ``table.nb`` in satcfdi's
# templates) takes it to ~0.7 s, and ~0.45 s where libharfbuzz-subset0 is installed (font
# subsetting without fontTools). The column widths keep the UUID, dates and the 120 px QR code
# clear of each other (checked on rendered pages). A fixed layout for every table is as fast
# but lets the concepts table overflow the page and the UUID run into its neighbour.
_FAST_LAYOUT = """
table.nb { table-layout: fixed; }
table.nb tr:first-child td:nth-child(1) { width: 17%; }
table.nb tr:first-child td:nth-child(2) { width: 39%; }
table.nb tr:first-child td:nth-child(3) { width: 22%; }
table.nb tr:first-child td:nth-child(4) { width: 22%; }
"""


@functools.cache
def _weasyprint() -> tuple[Any, Any, list[Any]]:
    """weasyprint (through satcfdi.render) needs pango and takes ~1.7 s to import: loaded on
    first use, so processes that never render a PDF start fast and run where pango is missing."""
    import weasyprint
    from satcfdi import render

    # It warns about satcfdi's template CSS (`vertical-align: center`) on every page.
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    return weasyprint, render, [render.PDF_CSS, weasyprint.CSS(string=_FAST_LAYOUT)]


# Atop every page of a sandbox stamp's PDF (a margin box, so the invoice's layout is untouched).
_SANDBOX_BANNER = (
    f'@page {{ @top-center {{ content: "{SANDBOX_LEGEND}"; color: #b00000; '
    "font: bold 9pt sans-serif; } }"
)


def is_sandbox_stamp(xml: bytes) -> bool:
    """Whether the stamp came from `colmena dev`'s PAC sandbox: its TimbreFiscalDigital carries
    `SANDBOX_LEGEND`, which no PAC writes."""
    tfd = etree.fromstring(xml, parser=satcfdi_parser).find(f".//{TFD}")
    return tfd is not None and tfd.get("Leyenda") == SANDBOX_LEGEND


def load_pdf_engine() -> None:
    """Import weasyprint and build the stylesheets now, so the first `render_pdf` of a process
    does not pay for it (a render process calls this when it starts)."""
    _weasyprint()


def render_pdf(xml: bytes) -> bytes:
    """The printed representation (representación impresa) of a stamped CFDI; a sandbox stamp's
    says so on every page. CPU-bound under the GIL: workers call it through
    `colmena.gateways.pdf_renderer`, in processes of their own."""
    weasyprint, render, stylesheets = _weasyprint()
    html = render.html_str(CFDI.from_string(xml))
    if is_sandbox_stamp(xml):
        stylesheets = [*stylesheets, weasyprint.CSS(string=_SANDBOX_BANNER)]
    return weasyprint.HTML(string=html).write_pdf(stylesheets=stylesheets)
