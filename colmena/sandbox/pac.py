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

Like the Mercado Pago sandbox it takes only its own test credential (`SANDBOX_TOKEN`): a
production SW token sent here by mistake is refused, not honoured.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from colmena.sandbox.pac_ledger import PacLedger, PacRefusal

LEDGER = web.AppKey("pac_sandbox_ledger", PacLedger)
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
    if request.match_info.route.name != "storage":
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


def pac_app(ledger: PacLedger | None = None) -> web.Application:
    """The sub-app; a test may hand in a ledger with its own clock."""
    app = web.Application(middlewares=[sw_errors])
    app[LEDGER] = ledger or PacLedger()
    app.router.add_post("/v4/cfdi33/stamp/v4", stamp)
    app.router.add_get("/datawarehouse/v1/live/{uuid}", datawarehouse)
    app.router.add_get("/storage/{uuid}.xml", storage, name="storage")
    return app
