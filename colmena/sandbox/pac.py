"""PAC sandbox: SW Sapien's REST stamping service, served by `colmena dev` under /sandbox/pac.

The routes colmena's PAC gateway (colmena.gateways.pac, through satcfdi's ``SWSapien``) calls,
in SW's wire format as SW's own Python SDK (lunasoft/sw-sdk-python) sends and reads it:

- ``POST /v4/cfdi33/stamp/v4``: ``Authorization: Bearer <token>``, an optional ``customid``
  header (SW's guard against stamping one document twice), the sealed CFDI as the multipart
  field ``xml``. Success is response version 4, "all the data of the stamp":
  ``{"data": {"cfdi", "cadenaOriginalSAT", "noCertificadoSAT", "noCertificadoCFDI", "uuid",
  "selloSAT", "selloCFDI", "fechaTimbrado", "qrCode"}, "status": "success"}`` (``qrCode`` is
  left empty: colmena renders its own PDF).
- Refusals: ``{"data": ..., "message": "<code>. <text>" | "<code> - <text>", "messageDetail",
  "status": "error"}``, HTTP 400 (401 for a token that is not the sandbox's); the codes are
  in `colmena.sandbox.pac_ledger`.
- ``GET /datawarehouse/v1/live/{uuid}`` (SW's "api" host, the same sandbox here):
  ``{"data": {"records": [{"uuid", "urlXml"}]}, "status": "success"}``, and ``GET`` of that
  ``urlXml`` returns the stamped XML: how the gateway recovers a stamp after ``CFDI3307``.

- ``POST /cfdi33/cancel/xml``: the CSD-signed ``Cancelacion`` as the multipart field ``xml``
  (checked like the SAT does: `colmena.sandbox.cancelacion_check`); answers
  ``{"data": {"acuse", "uuid": {"<UUID>": "<EstatusUUID>"}}, "status": "success"}`` with 201
  (cancelled), 202 (cancelled before), 203 (not the issuer's) or 205 (unknown). The sandbox's
  receivers accept at once, so a cancellation is final the moment it is filed.
- ``POST /ConsultaCFDIService.svc``: the SAT's status service for the sandbox's stamps
  (`colmena.sandbox.sat_status`), so `colmena dev` follows a cancellation to its end; it takes
  no token, as the SAT's does not.

Like the Mercado Pago sandbox it takes only its own test credential (`SANDBOX_TOKEN`): a
production SW token sent here by mistake is refused, not honoured.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal

from aiohttp import web
from lxml import etree

from colmena.sandbox import sat_status
from colmena.sandbox.cancelacion_check import CancelacionInvalid, check_cancelacion
from colmena.sandbox.pac_ledger import CFDI4, PacLedger, PacRefusal, Stamp

LEDGER = web.AppKey("pac_sandbox_ledger", PacLedger)
# EstatusCancelacion of each cancelled stamp, by UUID (lower case, as the ledger keys them).
CANCELLED = web.AppKey("pac_sandbox_cancelled", dict[str, str])
NO_ACCEPTANCE_LIMIT = Decimal("1000")
UNAUTHENTICATED_ROUTES = frozenset({"storage", "sat-status"})
SANDBOX_TOKEN = "sandbox-sw-token-colmena-dev"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(refusal: PacRefusal) -> web.Response:
    return web.json_response(
        {
            "data": refusal.data,
            "message": refusal.message,
            "messageDetail": refusal.detail,
            "status": "error",
        },
        status=refusal.status,
    )


@web.middleware
async def sw_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The sandbox's token first, then SW's error body for every refusal."""
    if request.match_info.route.name not in UNAUTHENTICATED_ROUTES:
        if request.headers.get("Authorization") != f"Bearer {SANDBOX_TOKEN}":
            return _error(PacRefusal(401, "AU2000 - El token proporcionado no es válido."))
    try:
        return await handler(request)
    except PacRefusal as refusal:
        return _error(refusal)


async def stamp(request: web.Request) -> web.Response:
    form = await request.post()
    upload = form.get("xml")
    if not isinstance(upload, web.FileField):
        raise PacRefusal(400, "301. XML mal formado.", "no 'xml' part in the multipart body")
    customid = request.headers.get("customid") or None
    issued = request.app[LEDGER].stamp(upload.file.read(), customid)
    return web.json_response({"data": issued.data, "status": "success"})


async def datawarehouse(request: web.Request) -> web.Response:
    wanted = request.match_info["uuid"].lower()
    records = []
    if wanted in request.app[LEDGER].stamps:
        path = request.app.router["storage"].url_for(uuid=wanted)
        records.append({"uuid": wanted, "urlXml": str(request.url.join(path))})
    return web.json_response({"data": {"records": records}, "status": "success"})


async def storage(request: web.Request) -> web.Response:
    """The stored XML behind ``urlXml``: a pre-signed link at SW, so no token is asked here."""
    issued = request.app[LEDGER].stamps.get(request.match_info["uuid"].lower())
    if issued is None:
        raise web.HTTPNotFound()
    return web.Response(body=issued.xml.encode(), content_type="text/xml")


def _cfdi(stamp: Stamp) -> etree._Element:
    return etree.fromstring(stamp.xml.encode())


def _issuer(root: etree._Element) -> str:
    issuer = root.find(f"{{{CFDI4}}}Emisor")
    return issuer.attrib["Rfc"] if issuer is not None else ""


async def cancel(request: web.Request) -> web.Response:
    form = await request.post()
    upload = form.get("xml")
    if not isinstance(upload, web.FileField):
        raise PacRefusal(400, "CA1000 - no 'xml' part in the multipart body")
    try:
        cancelacion = check_cancelacion(upload.file.read())
    except CancelacionInvalid as exc:
        raise PacRefusal(400, f"CA1000 - {exc}") from None
    stamps, cancelled = request.app[LEDGER].stamps, request.app[CANCELLED]
    codes = {}
    for folio in cancelacion.folios:
        key = folio.uuid.lower()
        stamp = stamps.get(key)
        if stamp is None:
            codes[folio.uuid] = "205"
        elif _issuer(root := _cfdi(stamp)) != cancelacion.issuer_rfc:
            codes[folio.uuid] = "203"
        elif key in cancelled:
            codes[folio.uuid] = "202"
        else:
            small = Decimal(root.attrib["Total"]) <= NO_ACCEPTANCE_LIMIT
            cancelled[key] = "Cancelado sin aceptación" if small else "Cancelado con aceptación"
            codes[folio.uuid] = "201"
    acuse = f'<Acuse xmlns="http://cancelacfd.sat.gob.mx" RfcEmisor="{cancelacion.issuer_rfc}">'
    acuse += "".join(
        f"<Folios><UUID>{uuid}</UUID><EstatusUUID>{code}</EstatusUUID></Folios>"
        for uuid, code in codes.items()
    )
    acuse += "</Acuse>"
    return web.json_response({"data": {"acuse": acuse, "uuid": codes}, "status": "success"})


async def consulta(request: web.Request) -> web.Response:
    """The SAT's status service over the sandbox's own stamps."""
    if request.headers.get("SOAPAction") != sat_status.SOAP_ACTION:
        raise web.HTTPBadRequest(text="unknown SOAPAction")
    asked = sat_status.question(await request.read())
    key = asked.get("id", "").lower()
    stamp = request.app[LEDGER].stamps.get(key)
    fields = sat_status.NOT_FOUND
    if stamp is not None:
        root = _cfdi(stamp)
        receiver = root.find(f"{{{CFDI4}}}Receptor")
        if (asked.get("re"), asked.get("rr"), Decimal(asked.get("tt", "-1"))) == (
            _issuer(root),
            receiver.attrib["Rfc"] if receiver is not None else "",
            Decimal(root.attrib["Total"]),
        ):
            estatus = request.app[CANCELLED].get(key)
            fields = (
                sat_status.FOUND,
                "Cancelable sin aceptación",
                "Cancelado" if estatus else "Vigente",
                estatus or "",
            )
    return web.Response(body=sat_status.answer(*fields), content_type="text/xml")


def pac_app(ledger: PacLedger | None = None) -> web.Application:
    """The sub-app; a test may hand in a ledger with its own clock."""
    app = web.Application(middlewares=[sw_errors])
    app[LEDGER] = ledger or PacLedger()
    app[CANCELLED] = {}
    app.router.add_post("/v4/cfdi33/stamp/v4", stamp)
    app.router.add_get("/datawarehouse/v1/live/{uuid}", datawarehouse)
    app.router.add_get("/storage/{uuid}.xml", storage, name="storage")
    app.router.add_post("/cfdi33/cancel/xml", cancel)
    app.router.add_post("/ConsultaCFDIService.svc", consulta, name="sat-status")
    return app
