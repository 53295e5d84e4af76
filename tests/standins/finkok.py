"""A local stand-in for Finkok's SOAP services, as satcfdi's ``Finkok`` client drives them.

Wire format it reproduces (what ``satcfdi/pacs/finkok.py`` sends and parses, checked against
Finkok's wiki as quoted by phpcfdi/finkok, its fixtures ``tests/_files/*-response.json`` and
its issue notes ``docs/issues/StampServiceDobleEstampado.md``):

- ``POST /servicios/soap/stamp.wsdl``, a SOAP 1.1 envelope whose Body holds
  ``{http://facturacion.finkok.com/stamp}stamp`` (or ``stamped``) with children ``xml`` (the
  sealed CFDI, base64), ``username`` and ``password``. The answer is
  ``stampResponse/stampResult`` (``stampedResponse/stampedResult``) whose fields live in the
  ``apps.services.soap.core.views`` namespace: ``xml`` (the stamped CFDI as escaped text),
  ``UUID``, ``Fecha``, ``CodEstatus`` ("Comprobante timbrado satisfactoriamente"), ``SatSeal``,
  ``NoCertificadoSAT`` and ``Incidencias``, always present (satcfdi iterates it), holding one
  ``Incidencia`` (``IdIncidencia``, ``Uuid``, ``CodigoError``, ``WorkProcessId``,
  ``MensajeIncidencia``, ``RfcEmisor``, ``NoCertificadoPac``, ``FechaRegistro``) per problem.
- The same sealed XML stamped again answers incidence ``307`` "El CFDI contiene un timbre
  previo" with an empty ``xml``: Finkok's wiki says ``stamp`` "may or may not" return the
  previous stamp, and this stand-in takes the harder branch. ``stamped`` returns it, and for a
  few seconds after the stamp (``stamped_lag``) answers ``603`` "El CFDI no contiene un timbre
  previo", as phpcfdi observed on Finkok's demo.
- ``POST /servicios/soap/cancel.wsdl``: ``{http://facturacion.finkok.com/cancel}
  cancel_signature`` with ``xml`` (the SAT ``Cancelacion`` signed with the CSD, base64),
  ``username``, ``password``. The answer ``cancel_signatureResponse/cancel_signatureResult``
  holds ``Folios/Folio`` (``UUID``, ``EstatusUUID``: ``201`` request accepted, ``202`` already
  cancelled, ``205`` unknown UUID; ``EstatusCancelacion``), ``Acuse``, ``Fecha`` and
  ``RfcEmisor``; a refused request carries ``CodEstatus`` instead.
- Each stamp is registered with a stand-in SAT (tests/standins/sat_status.py), and each
  cancellation filed there, so the SAT's status service (which colmena asks, whatever the PAC)
  answers for Finkok's CFDI as the SAT would.

What a PAC checks before stamping (schema, seal, CSD validity, receiver RFC) is the SW
stand-in's own check, reused: the codes are the SAT's CFDI 4.0 matrix either way. Not
confirmed from a public source, so chosen plainly: bad credentials answer incidence ``300``,
an issuer not registered on the account ``702``, the ``Acuse`` is an unsigned SAT-shaped
``Acuse`` element, and SOAP answers use HTTP 200 as Finkok's spyne server does.

Fault switches: ``hang_next`` (no answer until shutdown), ``fail_next`` (HTTP
``fail_status``, 500 unless changed, without stamping), ``drop_next`` (stamps, then closes the
connection without answering), ``stamped_lag`` (that many ``stamped`` calls answer 603 first).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from xml.sax.saxutils import escape

from aiohttp import web
from lxml import etree
from satcfdi.models import Signer
from satcfdi.utils import parser as satcfdi_parser

from tests.standins.csd import ISSUER_RFC, RECEIVER_RFC
from tests.standins.pac import MEXICO_CITY, Stamp, StandInSW, _digest
from tests.standins.sat_status import StandInSat
from tests.standins.serving import serve

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
STAMP = "http://facturacion.finkok.com/stamp"
CANCEL = "http://facturacion.finkok.com/cancel"
APPS = "apps.services.soap.core.views"
SAT_CANCEL = "http://cancelacfd.sat.gob.mx"
STAMPED_OK = "Comprobante timbrado satisfactoriamente"


@dataclass
class StandInFinkok:
    """Start with ``await finkok.start()``; ``finkok.url`` is the base URL of both services."""

    sat_signer: Signer
    user: str = "colmena@example.test"
    password: str = "secreto-de-prueba"
    issuers: set[str] = field(default_factory=lambda: {ISSUER_RFC})
    registered_rfcs: set[str] | None = field(default_factory=lambda: {ISSUER_RFC, RECEIVER_RFC})
    hang_next: int = 0
    fail_next: int = 0
    fail_status: int = 500
    drop_next: int = 0
    stamped_lag: int = 0
    received: list[tuple[str, str]] = field(default_factory=list)
    cancellations: list[etree._Element] = field(default_factory=list)
    # The SAT's records, where each stamp is registered and each cancellation filed; the test
    # plays the receiver there (accept, reject, let_expire). Serve it to test the status service.
    sat: StandInSat = field(default_factory=StandInSat)
    url: str = ""
    _core: StandInSW | None = None
    _by_sello: dict[str, str] = field(default_factory=dict)
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def stamps(self) -> dict[str, Stamp]:
        return self.core.stamps

    @property
    def core(self) -> StandInSW:
        if self._core is None:
            self._core = StandInSW(sat_signer=self.sat_signer, registered_rfcs=self.registered_rfcs)
        return self._core

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/servicios/soap/stamp.wsdl", self._stamp_service)
        app.router.add_post("/servicios/soap/cancel.wsdl", self._cancel_service)
        self._runner, self.url = await serve(app)
        return self.url

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the stamp service -----------------------------------------------------------------

    async def _stamp_service(self, request: web.Request) -> web.StreamResponse:
        operation, fields = await _operation(request, STAMP)
        self.received.append((operation, ""))
        if self.hang_next:
            self.hang_next -= 1
            await self._release.wait()
            return web.Response(status=503, text="stand-in shutting down")
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=self.fail_status, text="stand-in failure")
        if operation not in ("stamp", "stamped"):
            return _fault(f"unknown operation {operation}")
        if (fields.get("username"), fields.get("password")) != (self.user, self.password):
            return self._stamp_answer(
                operation, incidents=[("300", "Usuario y contraseña inválidos")]
            )
        raw = base64.b64decode(fields.get("xml", ""))
        problem = self.core._check(raw)
        if problem is not None:
            message = json.loads(problem.text or "{}")["message"]
            code, _, text = message.partition(" ")
            return self._stamp_answer(operation, incidents=[(code.rstrip(".-"), text.lstrip("- "))])
        root = etree.fromstring(raw, parser=satcfdi_parser)
        issuer = root.find("{http://www.sat.gob.mx/cfd/4}Emisor")
        if issuer is None or issuer.attrib["Rfc"] not in self.issuers:
            return self._stamp_answer(
                operation, incidents=[("702", "No se encontró el RFC del emisor")]
            )
        previous = self._by_sello.get(_digest(root.attrib["Sello"]))
        if operation == "stamped":
            if previous is None or self.stamped_lag:
                self.stamped_lag = max(0, self.stamped_lag - 1)
                return self._stamp_answer(
                    operation, incidents=[("603", "El CFDI no contiene un timbre previo")]
                )
            return self._stamp_answer(operation, stamp=self.stamps[previous])
        if previous is not None:
            return self._stamp_answer(
                operation, incidents=[("307", "El CFDI contiene un timbre previo")] * 2
            )
        stamp = self.core.issue_stamp(root)
        self._by_sello[_digest(root.attrib["Sello"])] = stamp.uuid
        receiver = root.find("{http://www.sat.gob.mx/cfd/4}Receptor")
        assert receiver is not None
        self.sat.register(
            stamp.uuid,
            issuer_rfc=issuer.attrib["Rfc"],
            receiver_rfc=receiver.attrib["Rfc"],
            total=Decimal(root.attrib["Total"]),
        )
        if self.drop_next:
            self.drop_next -= 1
            assert request.transport is not None
            request.transport.abort()
        return self._stamp_answer(operation, stamp=stamp)

    def _stamp_answer(
        self,
        operation: str,
        *,
        stamp: Stamp | None = None,
        incidents: Sequence[tuple[str, str]] = (),
    ) -> web.Response:
        rows = "".join(
            f"<s0:Incidencia><s0:IdIncidencia>{index}</s0:IdIncidencia><s0:Uuid></s0:Uuid>"
            f"<s0:CodigoError>{escape(code)}</s0:CodigoError><s0:WorkProcessId></s0:WorkProcessId>"
            f"<s0:MensajeIncidencia>{escape(text)}</s0:MensajeIncidencia>"
            f"<s0:RfcEmisor></s0:RfcEmisor><s0:NoCertificadoPac></s0:NoCertificadoPac>"
            f"<s0:FechaRegistro>{_now()}</s0:FechaRegistro></s0:Incidencia>"
            for index, (code, text) in enumerate(incidents, start=1)
        )
        if stamp is None:
            result = f"<s0:xml></s0:xml><s0:Incidencias>{rows}</s0:Incidencias>"
        else:
            result = (
                f"<s0:xml>{escape(stamp.xml)}</s0:xml><s0:UUID>{stamp.uuid}</s0:UUID>"
                f"<s0:Fecha>{stamp.data['fechaTimbrado']}</s0:Fecha>"
                f"<s0:CodEstatus>{STAMPED_OK}</s0:CodEstatus>"
                f"<s0:SatSeal>{stamp.data['selloSAT']}</s0:SatSeal>"
                f"<s0:Incidencias>{rows}</s0:Incidencias>"
                f"<s0:NoCertificadoSAT>{stamp.data['noCertificadoSAT']}</s0:NoCertificadoSAT>"
            )
        return _envelope(STAMP, operation, result)

    # -- the cancel service ----------------------------------------------------------------

    async def _cancel_service(self, request: web.Request) -> web.StreamResponse:
        operation, fields = await _operation(request, CANCEL)
        self.received.append((operation, fields.get("uuid", "")))
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=500, text="Internal Server Error")
        if (fields.get("username"), fields.get("password")) != (self.user, self.password):
            return _envelope(
                CANCEL, operation, "<s0:CodEstatus>Usuario y contraseña inválidos</s0:CodEstatus>"
            )
        if operation == "cancel_signature":
            return self._cancel(base64.b64decode(fields.get("xml", "")))
        return _fault(f"unknown operation {operation}")

    def _cancel(self, raw: bytes) -> web.Response:
        request = etree.fromstring(raw)
        self.cancellations.append(request)
        if (
            request.tag != f"{{{SAT_CANCEL}}}Cancelacion"
            or request.find("{http://www.w3.org/2000/09/xmldsig#}Signature") is None
        ):
            return _envelope(
                CANCEL, "cancel_signature", "<s0:CodEstatus>XML mal formado</s0:CodEstatus>"
            )
        issuer = request.attrib["RfcEmisor"]
        folios = []
        for folio in request.iter(f"{{{SAT_CANCEL}}}Folio"):
            uuid = folio.attrib["UUID"].upper()
            record = self.sat.records.get(uuid)
            if record is None or record.issuer_rfc != issuer:
                code, estatus = "205", ""
            else:
                code = self.sat.request_cancellation(uuid)
                estatus = record.estatus
            folios.append(
                f"<s0:Folio><s0:EstatusCancelacion>{escape(estatus)}</s0:EstatusCancelacion>"
                f"<s0:EstatusUUID>{code}</s0:EstatusUUID><s0:UUID>{uuid}</s0:UUID></s0:Folio>"
            )
        acuse = (
            f'<Acuse xmlns="{SAT_CANCEL}" Fecha="{_now()}" RfcEmisor="{issuer}">'
            + "".join(
                f"<Folios><UUID>{f.attrib['UUID'].upper()}</UUID></Folios>"
                for f in request.iter(f"{{{SAT_CANCEL}}}Folio")
            )
            + "</Acuse>"
        )
        return _envelope(
            CANCEL,
            "cancel_signature",
            f"<s0:Folios>{''.join(folios)}</s0:Folios><s0:Acuse>{escape(acuse)}</s0:Acuse>"
            f"<s0:Fecha>{_now()}</s0:Fecha><s0:RfcEmisor>{issuer}</s0:RfcEmisor>",
        )


async def _operation(request: web.Request, namespace: str) -> tuple[str, dict[str, str]]:
    """The Body's operation name and its child elements' text, by local name."""
    envelope = etree.fromstring(await request.read())
    body = envelope.find(f"{{{SOAP}}}Body")
    if body is None or len(body) == 0:
        raise web.HTTPBadRequest(text="no SOAP Body")
    operation = etree.QName(body[0])
    if operation.namespace != namespace:
        raise web.HTTPBadRequest(text=f"operation outside {namespace}")
    return operation.localname, {
        etree.QName(child).localname: child.text or "" for child in body[0]
    }


def _envelope(namespace: str, operation: str, result: str) -> web.Response:
    return web.Response(
        text=(
            f'<?xml version="1.0" encoding="UTF-8"?><senv:Envelope xmlns:senv="{SOAP}" '
            f'xmlns:tns="{namespace}" xmlns:s0="{APPS}"><senv:Body>'
            f"<tns:{operation}Response><tns:{operation}Result>{result}</tns:{operation}Result>"
            f"</tns:{operation}Response></senv:Body></senv:Envelope>"
        ),
        content_type="text/xml",
    )


def _fault(message: str) -> web.Response:
    return web.Response(
        status=500,
        content_type="text/xml",
        text=(
            f'<senv:Envelope xmlns:senv="{SOAP}"><senv:Body><senv:Fault>'
            f"<faultcode>senv:Client</faultcode><faultstring>{escape(message)}</faultstring>"
            "</senv:Fault></senv:Body></senv:Envelope>"
        ),
    )


def _now() -> str:
    return dt.datetime.now(MEXICO_CITY).replace(tzinfo=None, microsecond=0).isoformat()
