"""Every console page passes axe-core (WCAG 2 A and AA, contrast included) in chromium.

The pages are not listed by hand: the walk reads every GET route under /console/admin and
/console/tenant from the running app's router and fills its path parameters from a seeded
dataset (tests/console_data.py). A route this file has no mapping for fails the walk, so a new
page cannot be added without being checked. Routes that are not HTML pages (event streams,
file downloads) are named in NOT_PAGES with what they are, and checked for their status only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page

from tests.browser_support import (
    ConsoleServer,
    add_admin,
    axe_violations,
    describe,
    login_admin,
    login_tenant,
    problems_of,
    watch,
)
from tests.console_data import ConsoleData, seed_console

Fill = Callable[[ConsoleData], list[str]]

# canonical route -> the concrete paths to visit (path parameters from the seeded data; list
# pages also with a search or filter, so their results and empty states are checked too).
ADMIN_PAGES: dict[str, Fill] = {
    "/console/admin/": lambda d: ["/console/admin/"],
    "/console/admin/payments": lambda d: [
        "/console/admin/payments",
        f"/console/admin/payments?q={d.emails[0]}",
        f"/console/admin/payments?q={d.provider_payment_ids[1]}",
        "/console/admin/payments?q=nobody-paid-this",
    ],
    "/console/admin/payments/{payment_id}": lambda d: [
        f"/console/admin/payments/{payment_id}" for payment_id in d.payment_ids
    ],
    "/console/admin/dead-letters": lambda d: ["/console/admin/dead-letters"],
    "/console/admin/dead-letters/{queue}/{ident}": lambda d: [
        f"/console/admin/dead-letters/{d.dead_letter_queue}/{d.dead_letter.message_id}",
        f"/console/admin/dead-letters/{d.dead_letter_queue}/2",  # the undecodable one
    ],
    "/console/admin/licenses": lambda d: [
        "/console/admin/licenses",
        f"/console/admin/licenses?q={d.emails[0]}",
    ],
    "/console/admin/licenses/{license_id}": lambda d: [
        f"/console/admin/licenses/{license_id}" for license_id in d.license_ids
    ],
    "/console/admin/invoices": lambda d: ["/console/admin/invoices"],
    "/console/admin/invoices/{invoice_id}": lambda d: [
        f"/console/admin/invoices/{invoice_id}" for invoice_id in d.invoice_ids
    ],
    "/console/admin/rates": lambda d: ["/console/admin/rates"],
    "/console/admin/tenants": lambda d: ["/console/admin/tenants"],
    "/console/admin/tenants/{tenant_id}": lambda d: [
        f"/console/admin/tenants/{tenant.id}" for tenant in d.tenants
    ],
}
TENANT_PAGES: dict[str, Fill] = {
    "/console/tenant/": lambda d: ["/console/tenant/"],
    "/console/tenant/config": lambda d: ["/console/tenant/config"],
    "/console/tenant/logs": lambda d: ["/console/tenant/logs"],
    "/console/tenant/keys": lambda d: ["/console/tenant/keys"],
    "/console/tenant/keys/{provider}/replace": lambda d: ["/console/tenant/keys/stripe/replace"],
    "/console/tenant/notifications": lambda d: ["/console/tenant/notifications"],
}
# canonical route -> what it serves instead of a page (the pages that link to it are walked).
NOT_PAGES: dict[str, str] = {
    "/console/admin/invoices/{invoice_id}/xml": "the stamped CFDI XML (a download)",
    "/console/admin/invoices/{invoice_id}/pdf": "the invoice PDF (a download)",
    "/console/admin/tenants/{tenant_id}/logs/stream": "server-sent events (the live log tail)",
    "/console/tenant/logs/stream": "server-sent events (the live log tail)",
}
LANGUAGES = ["en-US", "es-VE"]


def _routes(app: web.Application, seen: set[int]) -> Iterator[web.AbstractRoute]:
    if id(app) in seen:
        return
    seen.add(id(app))
    for resource in app.router.resources():
        if isinstance(resource, web.PrefixedSubAppResource):
            yield from _routes(resource.get_info()["app"], seen)
        else:
            yield from resource


def get_routes(app: web.Application, prefix: str) -> list[str]:
    """The canonical paths of every GET route under `prefix`, sub-applications included."""
    return sorted(
        {
            route.resource.canonical
            for route in _routes(app, set())
            if route.method == "GET"
            and route.resource is not None
            and route.resource.canonical.startswith(prefix)
        }
    )


def pages_to_visit(app: web.Application, prefix: str, pages: dict[str, Fill]) -> list[str]:
    routes = get_routes(app, prefix)
    unmapped = [route for route in routes if route not in pages and route not in NOT_PAGES]
    assert not unmapped, (
        f"console routes with no entry in tests/test_console_a11y.py: {unmapped} "
        "(add each to the page map, filling its path parameters from tests/console_data.py)"
    )
    stale = [route for route in pages if route not in routes]
    assert not stale, f"mapped routes the app no longer has: {stale}"
    return routes


async def _check(page: Page, base_url: str, path: str) -> list[str]:
    """Visit `path`; what is wrong with it (empty: nothing)."""
    response = await page.goto(base_url + path)
    if response is None or response.status != 200:
        return [f"{path}: HTTP {response.status if response else 'no response'}"]
    if "/console/login" in page.url and not path.startswith("/console/login"):
        return [f"{path}: sent to the login page"]
    found = []
    violations = await axe_violations(page)
    if violations:
        found.append(f"{path}:\n{describe(violations)}")
    problems = problems_of(page)
    if problems.all():
        found.append(f"{path}: browser errors {problems.all()}")
        problems.clear()
    return found


async def _new_page(browser: Browser, locale: str) -> Page:
    context = await browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    watch(page)
    return page


async def _walk(page: Page, base_url: str, routes: list[str], pages: dict[str, Fill], data) -> str:
    found: list[str] = []
    for route in routes:
        for path in pages[route](data) if route in pages else []:
            found += await _check(page, base_url, path)
    return "\n\n".join(found)


@pytest.mark.parametrize("locale", LANGUAGES)
async def test_every_admin_page_passes_axe(
    browser: Browser, console_server: ConsoleServer, db, locale: str
) -> None:
    data = await seed_console(db, console_server.settings)
    routes = pages_to_visit(console_server.app, "/console/admin", ADMIN_PAGES)
    name, password = await add_admin(db, console_server.settings)
    page = await _new_page(browser, locale)
    try:
        await login_admin(page, console_server.base_url, name, password)
        found = await _walk(page, console_server.base_url, routes, ADMIN_PAGES, data)
    finally:
        await page.context.close()
    assert not found, found


@pytest.mark.parametrize("locale", LANGUAGES)
async def test_every_tenant_page_passes_axe(
    browser: Browser, console_server: ConsoleServer, db, locale: str
) -> None:
    data = await seed_console(db, console_server.settings)
    routes = pages_to_visit(console_server.app, "/console/tenant", TENANT_PAGES)
    page = await _new_page(browser, locale)
    try:
        await login_tenant(page, console_server.base_url, data.tenants[0].token)
        found = await _walk(page, console_server.base_url, routes, TENANT_PAGES, data)
    finally:
        await page.context.close()
    assert not found, found


async def test_downloads_answer_a_signed_in_admin(page: Page, console_server: ConsoleServer, db):
    """The routes that are not pages still answer: the stamped invoice's XML downloads."""
    data = await seed_console(db, console_server.settings)
    name, password = await add_admin(db, console_server.settings)
    await login_admin(page, console_server.base_url, name, password)
    response = await page.request.get(
        console_server.url(f"/console/admin/invoices/{data.invoice_ids[0]}/xml")
    )
    assert response.status == 200
    assert await response.body() == b"<cfdi:Comprobante/>"


@pytest.mark.parametrize("locale", LANGUAGES)
async def test_login_and_error_pages_pass_axe(
    browser: Browser, console_server: ConsoleServer, db, locale: str
) -> None:
    page = await _new_page(browser, locale)
    found = await _check(page, console_server.base_url, "/console/login")
    name, password = await add_admin(db, console_server.settings)
    await login_admin(page, console_server.base_url, name, password)
    missing = await page.goto(console_server.url("/console/admin/payments/999999999"))
    assert missing is not None and missing.status == 404
    violations = await axe_violations(page)
    assert not found and not violations, "\n\n".join(found) + describe(violations)
