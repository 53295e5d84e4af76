"""`GET /api/v1/openapi.json`: the OpenAPI 3.1 document of the tenant API and the rates API.

The document is a static file next to this module (openapi.json), read once at start-up: a
contract reads best as written, and tests/test_openapi.py keeps it true to the code (every
/api/v1 route documented and nothing else, the bot config schema equal to the pydantic model,
real answers validated against the documented schemas), and tests/test_schemathesis.py runs
Schemathesis over it against a real ingress: every constraint and status the server has is here.
"""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

PATH = "/api/v1/openapi.json"
DOCUMENT = web.AppKey("openapi_document", bytes)


def load_document() -> bytes:
    return files("colmena.http").joinpath("openapi.json").read_bytes()


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[DOCUMENT],
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=3600"},
    )


def setup(app: web.Application) -> None:
    app[DOCUMENT] = load_document()
    app.router.add_get(PATH, openapi_json)
