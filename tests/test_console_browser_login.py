"""Signing in, switching the language and signing out in a real browser (Debian's chromium),
with the keyboard alone where a person might: the forms work without help, the CSP refuses
nothing the pages need, and axe finds no WCAG A/AA violation on the login page either way."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

from tests.browser_support import (
    ConsoleServer,
    axe_violations,
    describe,
    login_admin_token,
    problems_of,
    tab_to,
)
from tests.console_support import ADMIN_TOKEN, console_settings


async def test_sign_in_with_the_keyboard_switch_language_and_sign_out(
    page: Page, make_console_server, settings
) -> None:
    server: ConsoleServer = await make_console_server(console_settings(settings))
    await page.goto(server.url("/console/admin/"))  # a stranger lands on the login page
    assert re.search(r"/console/login\?next=%2Fconsole%2Fadmin%2F$", page.url)
    await expect(page.locator("html")).to_have_attribute("lang", "en")  # Accept-Language
    violations = await axe_violations(page)
    assert violations == [], describe(violations)

    token_field = page.get_by_label("Admin token")
    await tab_to(page, token_field)
    await page.keyboard.type(ADMIN_TOKEN)
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert page.url == server.url("/console/admin/")

    # The switch in the top bar: Spanish from now on, on this page and the next.
    async with page.expect_navigation():
        await page.get_by_role("button", name="Español").click()
    await expect(page.locator("html")).to_have_attribute("lang", "es")
    assert page.url == server.url("/console/admin/")
    await expect(page.get_by_role("button", name="Español")).to_have_attribute(
        "aria-pressed", "true"
    )

    async with page.expect_navigation():
        await page.get_by_role("button", name="Salir").click()
    assert page.url == server.url("/console/login")
    await expect(page.get_by_role("status")).to_have_text("Has salido de la consola.")
    violations = await axe_violations(page)
    assert violations == [], describe(violations)
    await page.goto(server.url("/console/admin/"))
    assert "/console/login" in page.url  # signed out for real
    assert problems_of(page).all() == []


async def test_a_refused_sign_in_says_so_and_keeps_the_visitor_on_the_login_page(
    page: Page, make_console_server, settings
) -> None:
    server: ConsoleServer = await make_console_server(console_settings(settings))
    try:
        await login_admin_token(page, server.base_url, "not-the-admin-token-" + "x" * 20)
    except AssertionError as refused:
        assert "Sign-in failed" in str(refused)
    else:
        raise AssertionError("a wrong admin token signed in")
    await expect(page.get_by_role("alert")).to_contain_text("Sign-in failed")
    assert problems_of(page).all() == []
