"""A local stand-in for SW Sapien's REST stamping service, as satcfdi's ``SWSapien`` drives it.

Wire format it reproduces (what ``satcfdi/pacs/swsapien.py`` 26.x sends and parses, checked
against SW's own SDKs, lunasoft/sw-sdk-python / sw-sdk-dotnet, and their tests):

- ``POST /security/authenticate`` with headers ``user`` and ``password`` answers
  ``{"data": {"token": "...", "expires_in": <epoch s>, "tokeny_type": "bearer"},
  "status": "success"}``.
- ``POST /v4/cfdi33/stamp/v4``, ``Authorization: Bearer <token>``, optional ``customid`` header,
  multipart field ``xml`` holding the sealed CFDI. Success (response version 4):
  ``{"data": {"cfdi", "cadenaOriginalSAT", "noCertificadoSAT", "noCertificadoCFDI", "uuid",
  "selloSAT", "selloCFDI", "fechaTimbrado", "qrCode"}, "status": "success"}``.
- Errors: ``{"status": "error", "message": "<code>. <text>" | "<code> - <text>",
  "messageDetail": ...}``. Duplicates carry the previous stamp in ``data``:
  ``"307. El comprobante contiene un timbre previo."`` (same sealed XML again) with ``cfdi`` and
  ``tfd``; ``"CFDI3307 - Timbre duplicado. El customId proporcionado está duplicado."`` (customid
  reused) with ``tfd`` only, after which SW's SDKs fetch the XML from storage.
- ``GET /datawarehouse/v1/live/{uuid}`` (the "api" host) answers
  ``{"data": {"records": [{"uuid", "urlXml", ...}]}, "status": "success"}``; the XML is then
  downloaded from ``urlXml`` (here: served by this stand-in too).
- Validation codes follow the SAT's CFDI 4.0 matrix: ``301`` malformed/XSD-invalid XML, ``302``
  Sello invalid, ``305`` CSD not valid at Fecha, ``CFDI40143`` receiver RFC not in the SAT's
  list of registered taxpayers.

Not confirmed from a public source, so chosen plainly: errors use HTTP 400 (401 for a bad
token), and the exact wording of 301/302/305.

Cancellation (what satcfdi's ``SWSapien.cancel_comprobante`` sends and reads):

- ``POST /cfdi33/cancel/xml``, ``Authorization: Bearer <token>``, multipart field ``xml``
  holding the CSD-signed ``Cancelacion`` (checked as the SAT would: tests/standins/
  cancelacfd.py). Success: ``{"data": {"acuse": "<Acuse ...>", "uuid": {"<UUID>":
  "<EstatusUUID>"}}, "status": "success"}`` with the SAT's codes: ``201`` filed, ``202``
  cancelled before, ``203`` not the issuer's, ``205`` unknown UUID. Each filed one goes to the
  SAT stand-in (``sat``), which plays the status service. A request that fails the schema or
  the signature is an error body, ``"CA1000 - <why>"`` (code and wording chosen plainly).

Fault switches: ``hang_next`` (never answers until shutdown, so the client times out),
``fail_next`` (HTTP 500 without stamping), ``drop_next`` (stamps, then closes the connection
without answering); ``cancel_fail_next`` (HTTP 500 to a cancellation, nothing filed),
``cancel_drop_next`` (files it, then closes the connection without answering).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import secrets
import time
import uuid as uuid_module
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
from satcfdi.transform import (
    SchemaCollector,
    cfdi_schemas,
    validate_xsd,
    xslt_transform,
)
from satcfdi.utils import parser as satcfdi_parser

from colmena.domain.invoicing import Concept, Invoice, Issuer, Receiver
from colmena.sandbox.cancelacion_check import CancelacionInvalid, check_cancelacion
from tests.standins.csd import ISSUER_NAME, ISSUER_RFC, RECEIVER_NAME, RECEIVER_RFC
from tests.standins.sat_status import StandInSat
from tests.standins.serving import serve

CFDI4 = "http://www.sat.gob.mx/cfd/4"
MEXICO_CITY = ZoneInfo("America/Mexico_City")


@dataclass
class Stamp:
    uuid: str
    xml: str
    tfd: str
    data: dict[str, str]


@dataclass
class StandInSW:
    """Start with ``await pac.start()``; ``pac.url`` serves both SW hosts (services and api)."""

    sat_signer: Signer
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    user: str = "colmena@example.test"
    password: str = "secreto-de-prueba"
    registered_rfcs: set[str] | None = None
    hang_next: int = 0
    fail_next: int = 0
    drop_next: int = 0
    cancel_fail_next: int = 0
    cancel_drop_next: int = 0
    sat: StandInSat | None = None
    received: list[tuple[str, str]] = field(default_factory=list)
    cancellation_requests: list[bytes] = field(default_factory=list)
    stamps: dict[str, Stamp] = field(default_factory=dict)
    _by_sello: dict[str, str] = field(default_factory=dict)
    _by_customid: dict[str, str] = field(default_factory=dict)
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/security/authenticate", self._authenticate)
        app.router.add_post("/v4/cfdi33/stamp/v4", self._stamp)
        app.router.add_get("/datawarehouse/v1/live/{uuid}", self._datawarehouse)
        app.router.add_post("/cfdi33/cancel/xml", self._cancel)
        app.router.add_get("/storage/{uuid}.xml", self._storage)
        self._runner, self.url = await serve(app)
        return self.url

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- handlers ---------------------------------------------------------------------------

    async def _authenticate(self, request: web.Request) -> web.Response:
        self.received.append(("authenticate", ""))
        if (
            request.headers.get("user") != self.user
            or request.headers.get("password") != self.password
        ):
            return _error(401, "AU4101 - El usuario o contraseña son inválidos.")
        return web.json_response(
            {
                "data": {
                    "token": self.token,
                    "expires_in": int(time.time()) + 7200,
                    "tokeny_type": "bearer",
                },
                "status": "success",
            }
        )

    async def _stamp(self, request: web.Request) -> web.StreamResponse:
        customid = request.headers.get("customid", "")
        self.received.append(("stamp", customid))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "AU2000 - El token proporcionado no es válido.")
        if self.hang_next:
            self.hang_next -= 1
            await self._release.wait()
            return _error(503, "stand-in shutting down")
        if self.fail_next:
            self.fail_next -= 1
            return _error(500, "Internal Server Error")
        form = await request.post()
        upload = form.get("xml")
        if not isinstance(upload, web.FileField):
            return _error(400, "301. XML mal formado.", "no 'xml' part in the multipart body")
        raw = upload.file.read()

        if customid and (previous := self._by_customid.get(customid)):
            stamp = self.stamps[previous]
            return _error(
                400,
                "CFDI3307 - Timbre duplicado. El customId proporcionado está duplicado.",
                data={"tfd": stamp.tfd, "cfdi": ""},
            )
        problem = self._check(raw)
        if problem is not None:
            return problem
        root = etree.fromstring(raw, parser=satcfdi_parser)
        sello = root.attrib["Sello"]
        if previous := self._by_sello.get(_digest(sello)):
            stamp = self.stamps[previous]
            return _error(400, "307. El comprobante contiene un timbre previo.", data=stamp.data)

        stamp = self.issue_stamp(root)
        self._by_sello[_digest(sello)] = stamp.uuid
        if customid:
            self._by_customid[customid] = stamp.uuid
        if self.drop_next:
            self.drop_next -= 1
            assert request.transport is not None
            request.transport.abort()
        return web.json_response({"data": stamp.data, "status": "success"})

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        self.received.append(("cancel", ""))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "AU2000 - El token proporcionado no es válido.")
        if self.cancel_fail_next:
            self.cancel_fail_next -= 1
            return _error(500, "Internal Server Error")
        form = await request.post()
        upload = form.get("xml")
        if not isinstance(upload, web.FileField):
            return _error(400, "CA1000 - no 'xml' part in the multipart body")
        raw = upload.file.read()
        self.cancellation_requests.append(raw)
        try:
            cancelacion = check_cancelacion(raw)
        except CancelacionInvalid as exc:
            return _error(400, f"CA1000 - {exc}")
        codes = {}
        for folio in cancelacion.folios:
            stamp = self.stamps.get(folio.uuid)
            if stamp is None:
                codes[folio.uuid] = "205"
            elif _issuer_of(stamp) != cancelacion.issuer_rfc:
                codes[folio.uuid] = "203"
            else:
                codes[folio.uuid] = (
                    self.sat.request_cancellation(folio.uuid) if self.sat is not None else "201"
                )
        acuse = (
            f'<Acuse xmlns="http://cancelacfd.sat.gob.mx" RfcEmisor="{cancelacion.issuer_rfc}">'
            + "".join(
                f"<Folios><UUID>{uuid}</UUID><EstatusUUID>{code}</EstatusUUID></Folios>"
                for uuid, code in codes.items()
            )
            + "</Acuse>"
        )
        if self.cancel_drop_next:
            self.cancel_drop_next -= 1
            assert request.transport is not None
            request.transport.abort()
        return web.json_response({"data": {"acuse": acuse, "uuid": codes}, "status": "success"})

    async def _datawarehouse(self, request: web.Request) -> web.Response:
        wanted = request.match_info["uuid"].upper()
        self.received.append(("datawarehouse", wanted))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "AU2000 - El token proporcionado no es válido.")
        records = []
        if wanted in self.stamps:
            records.append(
                {
                    "uuid": wanted.lower(),
                    "urlXml": f"{self.url}/storage/{wanted}.xml",
                    "urlPdf": None,
                    "urlAckCfdi": None,
                }
            )
        return web.json_response({"data": {"records": records}, "status": "success"})

    async def _storage(self, request: web.Request) -> web.Response:
        stamp = self.stamps.get(request.match_info["uuid"].upper())
        if stamp is None:
            raise web.HTTPNotFound()
        return web.Response(body=stamp.xml.encode(), content_type="text/xml")

    # -- the PAC's work ---------------------------------------------------------------------

    def _check(self, raw: bytes) -> web.Response | None:
        """What a PAC verifies before stamping: schema, seal, CSD validity, receiver RFC."""
        try:
            root = etree.fromstring(raw, parser=satcfdi_parser)
            document = CFDI.from_xml(root)
            collector = SchemaCollector()
            cfdi_schemas[document.tag](collector, document)
            validate_xsd(root, collector.base)
        except (etree.XMLSyntaxError, KeyError, SchemaValidationError) as exc:
            return _error(400, "301. XML mal formado.", str(exc)[:300])
        certificate = x509.load_der_x509_certificate(base64.b64decode(root.attrib["Certificado"]))
        cadena = str(xslt_transform(root.tag, root.attrib["Version"])(root)).encode()
        try:
            certificate.public_key().verify(  # type: ignore[union-attr,call-arg]
                base64.b64decode(root.attrib["Sello"]), cadena, padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            return _error(400, "302. Sello mal formado o inválido.")
        fecha_utc = (
            dt.datetime.fromisoformat(root.attrib["Fecha"])
            .replace(tzinfo=MEXICO_CITY)
            .astimezone(dt.UTC)
        )
        if not certificate.not_valid_before_utc <= fecha_utc <= certificate.not_valid_after_utc:
            return _error(
                400, "305. La fecha de emisión no está dentro de la vigencia del CSD del Emisor."
            )
        receiver = root.find(f"{{{CFDI4}}}Receptor")
        assert receiver is not None
        if self.registered_rfcs is not None and receiver.attrib["Rfc"] not in self.registered_rfcs:
            return _error(
                400,
                "CFDI40143 - Este RFC del receptor no existe en la lista de RFC inscritos "
                "no cancelados del SAT.",
            )
        return None

    def issue_stamp(self, root: etree._Element) -> Stamp:
        tfd = TimbreFiscalDigital(
            proveedor=self.sat_signer,
            uuid=str(uuid_module.uuid4()).upper(),
            fecha_timbrado=dt.datetime.now(tz=MEXICO_CITY).replace(tzinfo=None, microsecond=0),
            sello_cfd=root.attrib["Sello"],
        )
        receiver = root.find(f"{{{CFDI4}}}Receptor")
        complemento = root.find(f"{{{CFDI4}}}Complemento")
        if complemento is None:
            complemento = etree.SubElement(root, f"{{{CFDI4}}}Complemento")
        tfd_root = tfd.to_xml()
        complemento.append(tfd_root)
        xml = etree.tostring(root, xml_declaration=True, encoding="UTF-8").decode()
        tfd_xml = etree.tostring(tfd_root, encoding="UTF-8").decode()
        data = {
            "cfdi": xml,
            "tfd": tfd_xml,
            "cadenaOriginalSAT": tfd.cadena_original(),
            "noCertificadoSAT": tfd["NoCertificadoSAT"],
            "noCertificadoCFDI": root.attrib["NoCertificado"],
            "uuid": tfd["UUID"],
            "selloSAT": tfd["SelloSAT"],
            "selloCFDI": root.attrib["Sello"],
            "fechaTimbrado": tfd["FechaTimbrado"].isoformat(),
            "qrCode": "",
        }
        stamp = Stamp(uuid=tfd["UUID"], xml=xml, tfd=tfd_xml, data=data)
        self.stamps[stamp.uuid] = stamp
        if self.sat is not None:
            issuer = root.find(f"{{{CFDI4}}}Emisor")
            assert issuer is not None and receiver is not None
            self.sat.register(
                stamp.uuid,
                issuer_rfc=issuer.attrib["Rfc"],
                receiver_rfc=receiver.attrib["Rfc"],
                total=Decimal(root.attrib["Total"]),
            )
        return stamp


def _issuer_of(stamp: Stamp) -> str:
    issuer = etree.fromstring(stamp.xml.encode()).find(f"{{{CFDI4}}}Emisor")
    return issuer.attrib["Rfc"] if issuer is not None else ""


def _digest(sello: str) -> str:
    return hashlib.sha256(sello.encode()).hexdigest()


def _error(
    status: int, message: str, detail: str | None = None, *, data: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"data": data, "message": message, "messageDetail": detail, "status": "error"},
        status=status,
    )


def sample_invoice(
    *, folio: str = "1", receiver_rfc: str = RECEIVER_RFC, unit_price: str = "1250.50"
) -> Invoice:
    """An invoice the stand-in accepts when its ``registered_rfcs`` hold the default RFCs."""
    return Invoice(
        issuer=Issuer(rfc=ISSUER_RFC, name=ISSUER_NAME, regime="601", postal_code="42501"),
        receiver=Receiver(
            rfc=receiver_rfc, name=RECEIVER_NAME, regime="601", postal_code="86991", cfdi_use="G03"
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
                unit_price=Decimal(unit_price),
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
