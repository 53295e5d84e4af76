"""A local stand-in for the SAT's CFDI status service (ConsultaCFDIService), in its SOAP shape
(written and read by `colmena.sandbox.sat_status`).

Wire format (what satcfdi's ``SAT.status`` sends, and the SAT's answer as phpcfdi/sat-estado-cfdi
records it from the real service):

- ``POST /ConsultaCFDIService.svc``, ``SOAPAction: http://tempuri.org/IConsultaCFDIService/
  Consulta``, body ``<Envelope><Body><tem:Consulta><tem:expresionImpresa><![CDATA[?re=<issuer>
  &rr=<receiver>&tt=<total>&id=<uuid>]]>``.
- Answer: ``<s:Envelope><s:Body><ConsultaResponse xmlns="http://tempuri.org/"><ConsultaResult
  xmlns:a="http://schemas.datacontract.org/2004/07/Sat.Cfdi.Negocio.ConsultaCfdi.Servicio">``
  with ``a:CodigoEstatus`` ("S - Comprobante obtenido satisfactoriamente." or "N - 602:
  Comprobante no encontrado."), ``a:EsCancelable`` ("Cancelable sin aceptación", "Cancelable con
  aceptación", "No cancelable"), ``a:Estado`` ("Vigente", "Cancelado", "No Encontrado"),
  ``a:EstatusCancelacion`` ("", "En proceso", "Cancelado sin aceptación", "Cancelado con
  aceptación", "Plazo vencido", "Solicitud rechazada") and ``a:ValidacionEFOS``.

The stand-in PAC registers each stamp here (``register``) and files each cancellation
(``request_cancellation``); the test plays the receiver (``accept``, ``reject``, ``let_expire``).
Which CFDI needs acceptance is judged plainly, by total and receiver RFC only (RMF 2.7.1.35
fracciones I, VII, VIII), so the stand-in does not borrow colmena's own rule. ``fail_next``
answers HTTP 500.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from aiohttp import web

from colmena.sandbox.sat_status import FOUND, NOT_FOUND, SOAP_ACTION, answer, question
from tests.standins.serving import serve

GENERIC_RFCS = frozenset({"XAXX010101000", "XEXX010101000"})


@dataclass
class SatRecord:
    issuer_rfc: str
    receiver_rfc: str
    total: Decimal
    estado: str = "Vigente"
    estatus: str = ""
    blocked: bool = False  # a related CFDI is in force: "No cancelable"

    @property
    def needs_acceptance(self) -> bool:
        return self.total > Decimal("1000") and self.receiver_rfc not in GENERIC_RFCS

    @property
    def es_cancelable(self) -> str:
        if self.blocked:
            return "No cancelable"
        return "Cancelable con aceptación" if self.needs_acceptance else "Cancelable sin aceptación"


@dataclass
class StandInSat:
    records: dict[str, SatRecord] = field(default_factory=dict)
    fail_next: int = 0
    queries: list[str] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/ConsultaCFDIService.svc", self._consulta)
        self._runner, self.url = await serve(app)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what the PAC and the receiver do ------------------------------------------------------

    def register(self, uuid: str, *, issuer_rfc: str, receiver_rfc: str, total: Decimal) -> None:
        self.records[uuid.upper()] = SatRecord(issuer_rfc, receiver_rfc, total)

    def request_cancellation(self, uuid: str) -> str:
        """The SAT's EstatusUUID for a filed cancellation: 201, or 202 when cancelled before."""
        record = self.records[uuid.upper()]
        if record.estado == "Cancelado":
            return "202"
        if record.blocked:
            return "201"  # filed; the status service then says No cancelable
        if record.needs_acceptance:
            record.estatus = "En proceso"
        else:
            record.estado, record.estatus = "Cancelado", "Cancelado sin aceptación"
        return "201"

    def accept(self, uuid: str) -> None:
        self.records[uuid.upper()].estado = "Cancelado"
        self.records[uuid.upper()].estatus = "Cancelado con aceptación"

    def reject(self, uuid: str) -> None:
        self.records[uuid.upper()].estatus = "Solicitud rechazada"

    def let_expire(self, uuid: str) -> None:
        """Three business days without an answer: the SAT cancels (tacit acceptance)."""
        self.records[uuid.upper()].estado = "Cancelado"
        self.records[uuid.upper()].estatus = "Plazo vencido"

    # -- the service ---------------------------------------------------------------------------

    async def _consulta(self, request: web.Request) -> web.Response:
        if request.headers.get("SOAPAction") != SOAP_ACTION:
            return web.Response(status=400, text="unknown SOAPAction")
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=500, text="Internal Server Error")
        asked = question(await request.read())
        self.queries.append(asked.get("id", ""))
        record = self.records.get(asked.get("id", "").upper())
        if record is None or (record.issuer_rfc, record.receiver_rfc, record.total) != (
            asked.get("re"),
            asked.get("rr"),
            Decimal(asked.get("tt", "-1")),
        ):
            fields = NOT_FOUND
        else:
            fields = (FOUND, record.es_cancelable, record.estado, record.estatus)
        return web.Response(body=answer(*fields), content_type="text/xml")
