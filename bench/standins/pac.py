"""A local stand-in for SW Sapien's stamping endpoint, as colmena's PAC gateway drives it.

Only the happy path the stamping bench measures: `POST /v4/cfdi33/stamp/v4` with a bearer
token and the sealed CFDI in the multipart field `xml`, checked as a PAC checks it (schema,
seal) and answered with a TimbreFiscalDigital signed by the "SAT" certificate. It runs in the
bench's process, so its checks and signing share the CPU with the worker, as the figures say.
tests/standins/pac.py is the full stand-in (errors, duplicates, storage, fault switches).
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from zoneinfo import ZoneInfo

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree
from satcfdi.cfdi import CFDI
from satcfdi.create.cfd.tfd11 import TimbreFiscalDigital
from satcfdi.exceptions import SchemaValidationError
from satcfdi.models import Signer
from satcfdi.transform import SchemaCollector, cfdi_schemas, validate_xsd, xslt_transform
from satcfdi.utils import parser as satcfdi_parser

from bench.standins.csd import ISSUER_NAME, ISSUER_RFC, RECEIVER_NAME, RECEIVER_RFC
from colmena.domain.invoicing import Concept, Invoice, Issuer, Receiver

CFDI4 = "http://www.sat.gob.mx/cfd/4"
MEXICO_CITY = ZoneInfo("America/Mexico_City")


@dataclass
class StandInSW:
    """Start with `await pac.start()`; pass `pac.url` and `pac.token` to the gateway."""

    sat_signer: Signer
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v4/cfdi33/stamp/v4", self._stamp)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _stamp(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "AU2000 - El token proporcionado no es válido.")
        form = await request.post()
        upload = form.get("xml")
        if not isinstance(upload, web.FileField):
            return _error(400, "301. XML mal formado.")
        raw = upload.file.read()
        problem = _check(raw)
        if problem is not None:
            return problem
        tfd_data = self.issue_stamp(etree.fromstring(raw, parser=satcfdi_parser))
        return web.json_response({"data": tfd_data, "status": "success"})

    def issue_stamp(self, root: etree._Element) -> dict[str, str]:
        """Add a TimbreFiscalDigital to `root`; the fields SW answers with (`cfdi` is the XML)."""
        tfd = TimbreFiscalDigital(
            proveedor=self.sat_signer,
            uuid=str(uuid.uuid4()).upper(),
            fecha_timbrado=dt.datetime.now(tz=MEXICO_CITY).replace(tzinfo=None, microsecond=0),
            sello_cfd=root.attrib["Sello"],
        )
        complemento = root.find(f"{{{CFDI4}}}Complemento")
        if complemento is None:
            complemento = etree.SubElement(root, f"{{{CFDI4}}}Complemento")
        tfd_root = tfd.to_xml()
        complemento.append(tfd_root)
        return {
            "cfdi": etree.tostring(root, xml_declaration=True, encoding="UTF-8").decode(),
            "tfd": etree.tostring(tfd_root, encoding="UTF-8").decode(),
            "cadenaOriginalSAT": tfd.cadena_original(),
            "noCertificadoSAT": tfd["NoCertificadoSAT"],
            "noCertificadoCFDI": root.attrib["NoCertificado"],
            "uuid": tfd["UUID"],
            "selloSAT": tfd["SelloSAT"],
            "selloCFDI": root.attrib["Sello"],
            "fechaTimbrado": tfd["FechaTimbrado"].isoformat(),
            "qrCode": "",
        }


def _check(raw: bytes) -> web.Response | None:
    """What a PAC verifies before stamping: the schema, then the seal over the cadena original."""
    try:
        root = etree.fromstring(raw, parser=satcfdi_parser)
        document = CFDI.from_xml(root)
        collector = SchemaCollector()
        cfdi_schemas[document.tag](collector, document)
        validate_xsd(root, collector.base)
    except (etree.XMLSyntaxError, KeyError, SchemaValidationError):
        return _error(400, "301. XML mal formado.")
    certificate = x509.load_der_x509_certificate(base64.b64decode(root.attrib["Certificado"]))
    cadena = str(xslt_transform(root.tag, root.attrib["Version"])(root)).encode()
    try:
        certificate.public_key().verify(  # type: ignore[union-attr,call-arg]
            base64.b64decode(root.attrib["Sello"]), cadena, padding.PKCS1v15(), hashes.SHA256()
        )
    except InvalidSignature:
        return _error(400, "302. Sello mal formado o inválido.")
    return None


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"data": None, "message": message, "messageDetail": None, "status": "error"},
        status=status,
    )


def sample_invoice(*, folio: str = "1") -> Invoice:
    """An invoice of two concepts between the stand-in issuer and receiver."""
    return Invoice(
        issuer=Issuer(rfc=ISSUER_RFC, name=ISSUER_NAME, regime="601", postal_code="42501"),
        receiver=Receiver(
            rfc=RECEIVER_RFC, name=RECEIVER_NAME, regime="601", postal_code="86991", cfdi_use="G03"
        ),
        series="A",
        folio=folio,
        payment_form="03",
        payment_method="PUE",
        concepts=(
            Concept(
                product_key="81112100",
                unit_key="E48",
                description="Suscripción mensual",
                unit_price=Decimal("1250.50"),
            ),
            Concept(
                product_key="81112100",
                unit_key="E48",
                description="Soporte",
                unit_price=Decimal("99.99"),
                quantity=Decimal(3),
            ),
        ),
    )
