"""The PAC sandbox's work: check a sealed CFDI as a PAC does, stamp it once, remember the stamp.

Kept in memory: a `colmena dev` restart starts an empty sandbox (an invoice colmena already
stamped keeps its stamp in colmena's own database).

What is checked is what the SAT's validation matrix asks of every PAC, with its codes:
``301`` the XML is malformed or not valid against the CFDI 4.0 schemas, ``302`` the seal does not
verify with the certificate the document carries, ``303`` that certificate is not the issuer's
(RFC), ``305`` the document's Fecha is outside the certificate's validity, ``306`` the
certificate is no CSD (it names no RFC), ``401`` the Fecha is more than 72 hours old or in the
future. Duplicates answer like SW: the same sealed XML again is ``307`` with the earlier stamp,
a reused customid is ``CFDI3307`` with the earlier TimbreFiscalDigital only.

The TimbreFiscalDigital is signed with a throwaway "PAC" certificate made when the sandbox
starts, and carries `colmena.gateways.cfdi.SANDBOX_LEGEND` as its Leyenda: a sandbox stamp is
recognisable anywhere and verifies against no SAT certificate.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from satcfdi.create.cfd.tfd11 import TimbreFiscalDigital
from satcfdi.models import Signer
from satcfdi.transform import xslt_transform
from satcfdi.utils import parser as satcfdi_parser

from colmena.gateways.cfdi import SANDBOX_LEGEND, CfdiInvalid, CsdError, inspect_csd, validate_xml

MEXICO_CITY = ZoneInfo("America/Mexico_City")
CFDI4 = "http://www.sat.gob.mx/cfd/4"
# The RFC SW's test environment writes as RfcProvCertif (seen on stamps from
# services.test.sw.com.mx in SW's own SDK test resources).
PAC_RFC = "SPR190613I52"
# A certificate number no SAT certificate has: the sandbox's own "SAT" certificate.
SANDBOX_CERTIFICATE_NUMBER = "99999000000000000001"
MAX_AGE = dt.timedelta(hours=72)


class PacRefusal(Exception):
    """What SW answers instead of a stamp: HTTP status, its message, and data it carries."""

    def __init__(
        self,
        status: int,
        message: str,
        detail: str | None = None,
        *,
        data: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail
        self.data = data


@dataclass(frozen=True)
class Stamp:
    uuid: str
    xml: str
    tfd: str
    data: dict[str, str]


def sandbox_pac_signer() -> Signer:
    """A self-signed certificate laid out like a PAC's (branch ``PAC<RFC>``, the certificate
    number as the serial's ASCII digits), so satcfdi can sign a TimbreFiscalDigital with it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "COLMENA DEV PAC SANDBOX (SIN VALIDEZ FISCAL)"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"PAC{PAC_RFC}"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(SANDBOX_CERTIFICATE_NUMBER.encode(), "big"))
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return Signer.load(
        certificate=certificate.public_bytes(serialization.Encoding.DER),
        key=key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def _digest(sello: str) -> str:
    return hashlib.sha256(sello.encode()).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class PacLedger:
    """Stamps by UUID, and the two duplicate guards (sealed XML, customid)."""

    signer: Signer = field(default_factory=sandbox_pac_signer)
    clock: Callable[[], dt.datetime] = _now
    stamps: dict[str, Stamp] = field(default_factory=dict)
    _by_sello: dict[str, str] = field(default_factory=dict)
    _by_customid: dict[str, str] = field(default_factory=dict)

    def stamp(self, raw: bytes, customid: str | None) -> Stamp:
        """The stamp of ``raw``; PacRefusal for a duplicate or a document a PAC refuses."""
        if customid and (previous := self._by_customid.get(customid)):
            raise PacRefusal(
                400,
                "CFDI3307 - Timbre duplicado. El customId proporcionado está duplicado.",
                data={"tfd": self.stamps[previous].tfd, "cfdi": ""},
            )
        root = self._checked(raw)
        sello = _digest(root.attrib["Sello"])
        if previous := self._by_sello.get(sello):
            stamp = self.stamps[previous]
            raise PacRefusal(
                400,
                "307. El comprobante contiene un timbre previo.",
                data={"cfdi": stamp.xml, "tfd": stamp.tfd},
            )
        stamp = self._issue(root)
        self.stamps[stamp.uuid] = stamp
        self._by_sello[sello] = stamp.uuid
        if customid:
            self._by_customid[customid] = stamp.uuid
        return stamp

    def _checked(self, raw: bytes) -> etree._Element:
        try:
            validate_xml(raw)
        except (CfdiInvalid, etree.XMLSyntaxError) as exc:
            raise PacRefusal(400, "301. XML mal formado.", str(exc)[:300]) from None
        root = etree.fromstring(raw, parser=satcfdi_parser)
        certificate_der = base64.b64decode(root.attrib["Certificado"])
        try:
            certificate = x509.load_der_x509_certificate(certificate_der)
        except ValueError:
            raise PacRefusal(400, "302. Sello mal formado o inválido.") from None
        try:
            info = inspect_csd(certificate_der)
        except CsdError:
            raise PacRefusal(400, "306. El certificado no es de tipo CSD.") from None
        cadena = str(xslt_transform(root.tag, root.attrib["Version"])(root)).encode()
        public_key = certificate.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise PacRefusal(400, "302. Sello mal formado o inválido.")
        try:
            public_key.verify(
                base64.b64decode(root.attrib["Sello"]), cadena, padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            raise PacRefusal(400, "302. Sello mal formado o inválido.") from None
        issuer = root.find(f"{{{CFDI4}}}Emisor")
        if issuer is None or issuer.attrib.get("Rfc") != info.rfc:
            raise PacRefusal(400, "303. Sello no corresponde a emisor.")
        fecha = dt.datetime.fromisoformat(root.attrib["Fecha"]).replace(tzinfo=MEXICO_CITY)
        if not info.is_valid_at(fecha.astimezone(dt.UTC)):
            raise PacRefusal(
                400, "305. La fecha de emisión no está dentro de la vigencia del CSD del Emisor."
            )
        now = self.clock()
        if not now - MAX_AGE <= fecha <= now:
            raise PacRefusal(400, "401. Fecha y hora de generación fuera de rango.")
        return root

    def _issue(self, root: etree._Element) -> Stamp:
        stamped_at = self.clock().astimezone(MEXICO_CITY).replace(tzinfo=None, microsecond=0)
        tfd = TimbreFiscalDigital(
            proveedor=self.signer,
            uuid=str(uuid_module.uuid4()),
            fecha_timbrado=stamped_at,
            sello_cfd=root.attrib["Sello"],
            leyenda=SANDBOX_LEGEND,
        )
        complemento = root.find(f"{{{CFDI4}}}Complemento")
        if complemento is None:
            complemento = etree.SubElement(root, f"{{{CFDI4}}}Complemento")
        tfd_root = tfd.to_xml()
        complemento.append(tfd_root)
        xml = etree.tostring(root, xml_declaration=True, encoding="UTF-8").decode()
        tfd_xml = etree.tostring(tfd_root, encoding="UTF-8").decode()
        data = {
            "cfdi": xml,
            "cadenaOriginalSAT": tfd.cadena_original(),
            "noCertificadoSAT": tfd["NoCertificadoSAT"],
            "noCertificadoCFDI": root.attrib["NoCertificado"],
            "uuid": tfd["UUID"],
            "selloSAT": tfd["SelloSAT"],
            "selloCFDI": root.attrib["Sello"],
            "fechaTimbrado": tfd["FechaTimbrado"].isoformat(),
            "qrCode": "",
        }
        return Stamp(uuid=tfd["UUID"], xml=xml, tfd=tfd_xml, data=data)
