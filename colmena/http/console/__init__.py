"""The console: server-rendered pages for operators (/console/admin/) and tenants
(/console/tenant/), mounted at /console as a sub-app of the ingress.

The sub-app carries its own middlewares, outermost first: HTML error pages, the session (who
is signed in, and which pages need whom), CSRF. Its template environment (aiohttp-jinja2,
autoescaped) is its own, and its answers carry the console's CSP. `core` is what pages are
built from; `operator` and `tenant` add the pages.
"""

from __future__ import annotations

import aiohttp_jinja2
import jinja2
from aiohttp import web

from colmena.http.console import csrf, errors, login, operator, sessions, tenant
from colmena.http.console.core import CLOCK, PREFIX, Clock
from colmena.http.console.i18n import CATALOG, load_catalog
from colmena.http.console.static import STATIC, StaticFiles
from colmena.http.middlewares import HTML_ERROR_PAGES

CONSOLE_APP = web.AppKey("console_app", web.Application)


def create_console() -> web.Application:
    console = web.Application(
        middlewares=[errors.error_middleware, sessions.session_middleware, csrf.csrf_middleware]
    )
    aiohttp_jinja2.setup(
        console,
        loader=jinja2.PackageLoader("colmena.http", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    console[CATALOG] = load_catalog()
    console[STATIC] = StaticFiles()
    console.router.add_get("/static/{name}", console[STATIC].handler)
    login.add_routes(console)
    operator.register(console)
    tenant.register(console)
    console.on_response_prepare.append(errors.console_headers)
    return console


def setup(app: web.Application) -> None:
    """Mount the console at /console; its clock is the ingress's (tests replace CLOCK)."""
    app[CLOCK] = Clock()
    console = create_console()
    app[CONSOLE_APP] = console
    app[HTML_ERROR_PAGES] = {PREFIX: errors.refusal_page(console)}
    app.add_subapp(PREFIX, console)
