"""Real-browser test support for the console: Debian's chromium driven by Playwright, a real
ingress on a free loopback port, login helpers and axe-core.

Loaded by tests/conftest.py as a pytest plugin, so every test file gets the fixtures
(`browser`, `page`, `console_server`, `make_console_server`) without importing them.

Playwright never downloads a browser here: it launches `/usr/bin/chromium` (the Debian package
that .ci/run installs). Without it the browser tests skip, saying why; with `CI=true` they fail
instead, as the docker tests do, because a CI run that skipped them would prove nothing.

The browser and the server share the test's event loop (pytest-asyncio auto mode): the
Playwright async API awaits the browser while aiohttp serves the page in the same loop.
"""

from __future__ import annotations

import re
import secrets
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Response,
    async_playwright,
)

from colmena.config import Settings
from colmena.domain.accounts import HashCost, hasher
from colmena.http.app import create_app
from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.resources import Resources
from tests.accounts_support import COST

CHROMIUM = Path("/usr/bin/chromium")
# Headless and quiet: no sandbox (CI runs as root), no GPU, and nothing that phones home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# WCAG 2.0 level A and AA rules (color-contrast is among the AA ones).
AXE_TAGS = ["wcag2a", "wcag2aa"]
NAVIGATION_TIMEOUT_MS = 15_000
SHUTDOWN_TIMEOUT_S = 1.0


def require_chromium() -> None:
    """Return if Debian's chromium is installed; otherwise skip, or fail under CI=true."""
    from tests.conftest import in_ci

    if CHROMIUM.is_file():
        return
    if in_ci():
        pytest.fail(
            f"{CHROMIUM} is missing, and CI=true: browser tests must run in CI, not skip "
            "(.ci/run installs Debian's chromium)",
            pytrace=False,
        )
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; with CI=true this fails)")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless chromium of this test's own (closed afterwards)."""
    require_chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A page in a fresh context (own cookies), English, a laptop-sized viewport; console
    errors and uncaught exceptions are collected in `problems_of(page)`."""
    context = await browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(NAVIGATION_TIMEOUT_MS)
    opened = await context.new_page()
    watch(opened)
    yield opened
    await context.close()


@dataclass
class PageProblems:
    """What the browser complained about: console errors (a CSP refusal of an inline style or
    script shows up here), uncaught script exceptions, and sub-resources (styles, scripts,
    images, fetches) answered with an error status."""

    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    failed_resources: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        return self.console_errors + self.exceptions + self.failed_resources

    def clear(self) -> None:
        for found in (self.console_errors, self.exceptions, self.failed_resources):
            found.clear()


# Per page, forgotten with it.
_PROBLEMS: weakref.WeakKeyDictionary[Page, PageProblems] = weakref.WeakKeyDictionary()
# Chromium's own "Failed to load resource" line: the response listener reports those with the
# URL instead, leaving out the main document (a 404 page is a page) and the favicon chromium
# asks for by itself.
_LOAD_FAILED = "Failed to load resource"


def watch(page: Page) -> PageProblems:
    """Start collecting a page's console errors and exceptions (the `page` fixture does)."""
    problems = _PROBLEMS.setdefault(page, PageProblems())

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith(_LOAD_FAILED):
            problems.console_errors.append(message.text)

    def on_response(response: Response) -> None:
        if (
            response.status >= 400
            and response.request.resource_type != "document"
            and not response.url.endswith("/favicon.ico")
        ):
            problems.failed_resources.append(f"{response.status} {response.url}")

    page.on("console", on_console)
    page.on("response", on_response)
    page.on("pageerror", lambda error: problems.exceptions.append(str(error)))
    return problems


def problems_of(page: Page) -> PageProblems:
    return _PROBLEMS.setdefault(page, PageProblems())


@dataclass(frozen=True)
class ConsoleServer:
    """A real ingress (the whole app, console included) on 127.0.0.1."""

    base_url: str
    settings: Settings
    app: web.Application

    def url(self, path: str) -> str:
        return self.base_url + path


@pytest.fixture
async def make_console_server(
    settings: Settings,
) -> AsyncIterator[Callable[..., Awaitable[ConsoleServer]]]:
    """Start `create_app(settings, resources)` on a free loopback port; stopped afterwards.
    `.settings` of the result is what the server runs with (add admins with it)."""
    servers: list[TestServer] = []

    async def make(settings_override: Settings | None = None) -> ConsoleServer:
        # A cheap argon2id cost: a login per test, not a benchmark of the hash.
        active = (settings_override or settings).model_copy(update=COST)
        resources = Resources(
            active,
            database_url=active.require_database_url(),
            publisher=AmqpPublisher(
                active.require_broker_url(),
                active.queue_prefix,
                quorum=active.quorum_queues,
                connect_timeout=2,
            ),
        )
        app = create_app(active, resources)
        server = TestServer(app, host="127.0.0.1")
        # A browser still showing a page with a live log (an open EventSource) would hold
        # the server's graceful shutdown for aiohttp's default 60 s; the test is over by then.
        await server.start_server(shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        servers.append(server)
        return ConsoleServer(
            base_url=str(server.make_url("")).rstrip("/"), settings=active, app=app
        )

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
async def console_server(
    make_console_server: Callable[..., Awaitable[ConsoleServer]],
) -> ConsoleServer:
    """The console on the test's own database and queues (the `settings` fixture)."""
    return await make_console_server()


async def add_admin(
    conn: asyncpg.Connection,
    settings: Settings,
    *,
    name: str | None = None,
    password: str | None = None,
) -> tuple[str, str]:
    """(name, password) of a new console admin, hashed as the console hashes them."""
    from colmena.store.admins import create_admin

    name = name or f"admin-{uuid.uuid4().hex[:8]}"
    password = password or secrets.token_urlsafe(18)
    cost = HashCost(
        settings.accounts_argon2_time_cost,
        settings.accounts_argon2_memory_kib,
        settings.accounts_argon2_parallelism,
    )
    await create_admin(conn, name=name, password_hash=hasher(cost).hash(password))
    return name, password


async def _submit(page: Page, base_url: str, form_field: str, values: dict[str, str]) -> None:
    """Fill the login form that holds `form_field` and press its submit button, then insist
    the browser left the login page (a refused login fails here, with the page's message)."""
    await page.goto(base_url + "/console/login")
    form = page.locator(f"form:has([name='{form_field}'])")
    for name, value in values.items():
        await form.locator(f"[name='{name}']").fill(value)
    async with page.expect_navigation():
        await form.locator("button[type='submit'], input[type='submit']").first.click()
    if re.search(r"/console/login(\?|$)", page.url):
        shown = (await page.locator("main").inner_text())[:400]
        raise AssertionError(f"login refused; still on {page.url}: {shown!r}")


async def login_admin(page: Page, base_url: str, name: str, password: str) -> None:
    """Sign in through the admin form of /console/login, as a person would."""
    await _submit(page, base_url, "username", {"username": name, "password": password})


async def login_admin_token(page: Page, base_url: str, admin_token: str) -> None:
    """Sign in with the admin token (the login page offers it where no admin accounts exist)."""
    await _submit(page, base_url, "admin_token", {"admin_token": admin_token})


async def login_tenant(page: Page, base_url: str, token: str) -> None:
    """Sign in through the tenant form of /console/login with a tenant API token."""
    await _submit(page, base_url, "token", {"token": token})


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's WCAG 2 A/AA violations on the page as it is now, run in the same browser.

    Each is `{"id", "impact", "help", "targets": [css selectors...]}`: short enough to read in
    an assertion message, precise enough to find the element."""
    results = await Axe().run(
        page,
        options={"runOnly": {"type": "tag", "values": AXE_TAGS}, "resultTypes": ["violations"]},
    )
    return [
        {
            "id": violation["id"],
            "impact": violation["impact"],
            "help": violation["help"],
            "targets": [", ".join(map(str, node["target"])) for node in violation["nodes"]],
        }
        for violation in results.response["violations"]
    ]


async def tab_to(page: Page, target: Locator, *, max_tabs: int = 120) -> int:
    """Press Tab (only Tab) until `target` has the keyboard focus; how many presses it took.

    Fails if the focus never gets there (a control reachable only by mouse), or if the
    focused control shows no focus indicator (an outline or a box shadow)."""
    for presses in range(1, max_tabs + 1):
        await page.keyboard.press("Tab")
        if await target.evaluate("element => element === document.activeElement"):
            indicator = await target.evaluate(
                """element => {
                    const style = getComputedStyle(element);
                    return (style.outlineStyle !== "none" && style.outlineWidth !== "0px")
                        || style.boxShadow !== "none";
                }"""
            )
            assert indicator, f"{target} has the focus but shows no focus indicator"
            return presses
    raise AssertionError(f"{max_tabs} presses of Tab never reached {target}")


def describe(violations: list[dict[str, Any]]) -> str:
    """One line per violation, for assertion messages."""
    return "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} at {'; '.join(v['targets'][:5])}"
        for v in violations
    )
