"""The console in a real browser: Debian's chromium (Playwright) against a real ingress.

The first tests prove the machinery itself can fail (axe finds a missing label and poor
contrast; a CSP refusal is caught), so a clean result on the console pages means something.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Page

from tests.browser_support import (
    ConsoleServer,
    add_admin,
    axe_violations,
    describe,
    login_admin,
    problems_of,
    require_chromium,
    tab_to,
)
from tests.console_screenshots import SHOTS, VIEWPORT, take_screenshots
from tests.standins.serving import serve

BROKEN = """<!doctype html><html lang="en"><head><title>broken</title></head><body><main>
<h1>Broken on purpose</h1>
<input name="nameless">
<p style="color:#bbb;background:#fff">faint text</p>
</main></body></html>"""


async def test_axe_reports_a_missing_label_and_poor_contrast(page: Page) -> None:
    await page.set_content(BROKEN)
    found = {violation["id"] for violation in await axe_violations(page)}
    assert {"label", "color-contrast"} <= found, found


async def test_tab_to_refuses_mouse_only_and_unmarked_controls(page: Page) -> None:
    await page.set_content(
        """<!doctype html><html lang="en"><title>keys</title><style>
        #bare:focus { outline: none; }</style><main>
        <span id="fake" class="button">Requeue</span>
        <button id="real">Requeue</button><button id="bare">Revoke</button></main></html>"""
    )
    assert await tab_to(page, page.locator("#real")) == 1
    with pytest.raises(AssertionError, match="shows no focus indicator"):
        await tab_to(page, page.locator("#bare"))
    with pytest.raises(AssertionError, match="never reached"):
        await tab_to(page, page.locator("#fake"), max_tabs=5)


async def test_a_csp_refusal_is_caught(page: Page) -> None:
    async def blocked(request: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><title>x</title><script>document.title='ran'</script>",
            content_type="text/html",
            headers={"Content-Security-Policy": "default-src 'none'; script-src 'self'"},
        )

    app = web.Application()
    app.router.add_get("/", blocked)
    runner, base_url = await serve(app)
    try:
        await page.goto(base_url + "/")
    finally:
        await runner.cleanup()
    assert await page.title() == "x"
    assert any("Content Security Policy" in text for text in problems_of(page).console_errors)


async def test_login_page_renders_and_passes_axe(page: Page, console_server: ConsoleServer) -> None:
    response = await page.goto(console_server.url("/console/login"))
    assert response is not None and response.status == 200
    assert await page.locator("input[name='token']").count() == 1
    assert await page.get_by_role("button", name="Sign in").count() >= 1
    violations = await axe_violations(page)
    assert violations == [], describe(violations)
    assert problems_of(page).all() == []


async def test_an_admin_signs_in_and_reaches_the_overview(
    page: Page, console_server: ConsoleServer, db
) -> None:
    name, password = await add_admin(db, console_server.settings)
    await page.goto(console_server.url("/console/admin/"))
    assert "/console/login" in page.url  # no session yet: sent to the login page
    await login_admin(page, console_server.base_url, name, password)
    assert "/console/admin" in page.url
    assert name in await page.locator("body").inner_text()
    assert problems_of(page).all() == []


async def test_the_screenshot_script_saves_every_page(tmp_path: Path) -> None:
    """`python -m tests.console_screenshots` keeps working as pages change (docs/console/)."""
    require_chromium()
    written = await take_screenshots(tmp_path)
    assert sorted(path.name for path in written) == sorted(shot.file for shot in SHOTS)
    for path in written:
        header = path.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n", path
        assert struct.unpack(">I", header[16:20])[0] == VIEWPORT["width"], path
