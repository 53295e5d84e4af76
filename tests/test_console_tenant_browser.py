"""A tenant runs their bot from the console in a real browser (Debian's chromium, Playwright).

The whole way: a real ingress, a Dramatiq worker on the bots queue, a real local-process bot,
and the log shipper as the scheduler calls it. The tenant signs in with their token, changes
the config, starts the bot and watches its first log line (which names the new config) arrive
on the live log page without a reload, then adds a provider key and removes it; each outcome
is read from the database. Another tenant's browser session, signed in at the same time, sees
none of it. No page of the walk has an axe-core violation or a browser console error (the CSP
refuses any inline script or style, and says so there).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from colmena.actors.bots import ship_logs
from colmena.config import Settings
from colmena.runtime.resources import Resources
from colmena.store import tenants as store
from colmena.supervisor.runtimes import close_runtimes
from tests.bots_support import add_tenant, bot_settings, resources_for
from tests.browser_support import (
    ConsoleServer,
    axe_violations,
    describe,
    login_tenant,
    problems_of,
    watch,
)
from tests.conftest import wait_for


@pytest.fixture
def active(settings: Settings, tmp_path: Path):
    chosen = bot_settings(settings, tmp_path, "process", None)
    yield chosen
    close_runtimes()  # the bots this test started go with it


@pytest.fixture
async def shipper(active: Settings) -> AsyncIterator[Resources]:
    """What the scheduler's log shipper uses (the test calls `ship_logs` itself)."""
    resources = resources_for(active)
    await resources.start()
    yield resources
    await resources.close()


async def no_violations(page: Page) -> None:
    violations = await axe_violations(page)
    assert violations == [], describe(violations)


async def command_done(db, tenant_id: str, kind: str) -> None:
    async def done() -> bool:
        status = await db.fetchval(
            "SELECT status FROM bot_commands WHERE tenant_id = $1 AND kind = $2 "
            "ORDER BY created_at DESC LIMIT 1",
            tenant_id,
            kind,
        )
        assert status in (None, "queued", "done"), status
        return status == "done"

    await wait_for(done, timeout=30)


async def test_a_tenant_configures_starts_watches_and_keys_their_bot(
    db, active, shipper, make_console_server, start_worker, browser: Browser, page: Page
) -> None:
    tenant_id, token = await add_tenant(db)
    other_id, other_token = await add_tenant(db)
    server: ConsoleServer = await make_console_server(active)
    start_worker(settings_override=active, queues=["bots"])
    await login_tenant(page, server.base_url, token)

    # The config, through the form.
    await page.goto(server.url("/console/tenant/config"))
    await no_violations(page)
    await page.get_by_label("Symbols").fill("ETHUSDT")
    await page.get_by_label("Capital").fill("250")
    await page.get_by_role("button", name="Save the config").click()
    await expect(page.get_by_role("status")).to_contain_text("Config saved as version 2")
    bot = await store.get_bot(db, tenant_id)
    assert bot is not None and bot.config == {
        "symbols": ["ETHUSDT"],
        "mode": "paper",
        "capital": "250",
    }
    await command_done(db, tenant_id, "configure")

    # Start, then the live log: nothing shipped yet, so the line must arrive live.
    await page.goto(server.url("/console/tenant/"))
    await no_violations(page)
    await page.get_by_role("button", name="Start", exact=True).click()
    await expect(page.get_by_role("status").first).to_contain_text("Start requested")
    await command_done(db, tenant_id, "start")
    await page.goto(server.url("/console/tenant/logs"))
    await expect(page.get_by_text("No log lines yet.")).to_be_visible()
    await expect(page.locator("#live-logs-status")).to_contain_text("Live:")
    await no_violations(page)

    async def shipped() -> int:
        return await ship_logs(shipper)

    await wait_for(shipped, timeout=30)
    lines = page.locator(".live-logs-lines li")
    first_line = f"colmena-bot starting tenant={tenant_id} config_version=2"
    await expect(lines.filter(has_text=first_line)).to_have_count(1)
    await expect(lines.filter(has_text='"ETHUSDT"')).to_have_count(1)
    await expect(page.get_by_text("No log lines yet.")).to_be_hidden()

    # A provider key: added (masked), then removed after the confirmation page.
    key = "sk-" + uuid.uuid4().hex + "Zq9X"
    await page.goto(server.url("/console/tenant/keys"))
    await no_violations(page)
    await page.get_by_label("Provider").fill("binance")
    await page.get_by_label("Key", exact=True).fill(key)
    await page.get_by_role("button", name="Add the key").click()
    await expect(page.get_by_role("row", name="binance")).to_contain_text("****Zq9X")
    assert key not in await page.content()
    stored = await db.fetchval(
        "SELECT count(*) FROM (SELECT provider FROM pending_provider_keys WHERE tenant_id = $1 "
        "UNION ALL SELECT provider FROM provider_keys WHERE tenant_id = $1) AS k",
        tenant_id,
    )
    assert stored >= 1
    await no_violations(page)

    # Meanwhile another tenant's browser session sees none of it.
    other_context = await browser.new_context(locale="en-US")
    other = await other_context.new_page()
    watch(other)
    try:
        await login_tenant(other, server.base_url, other_token)
        for path in ("/console/tenant/", "/console/tenant/config", "/console/tenant/keys"):
            await other.goto(server.url(path))
            html = await other.content()
            for value in (tenant_id, "ETHUSDT", "****Zq9X", first_line):
                assert value not in html, (path, value)
            assert other_id in html
        await other.goto(server.url("/console/tenant/logs"))
        await expect(other.locator("#live-logs-status")).to_contain_text("its log ended")
        assert await other.locator(".live-logs-lines li").count() == 0
        assert tenant_id not in await other.content()
        assert problems_of(other).all() == []
    finally:
        await other_context.close()

    await page.get_by_role("button", name="Remove binance").click()
    await expect(page.get_by_text("Remove the binance key (****Zq9X)?")).to_be_visible()
    await no_violations(page)
    await page.get_by_role("button", name="Yes, do it").click()
    await expect(page.get_by_role("status").first).to_contain_text("The binance key is removed")
    await expect(page.get_by_role("row", name="binance")).to_have_count(0)

    async def key_gone() -> bool:
        rows = await db.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM pending_provider_keys WHERE tenant_id = $1 "
            "UNION ALL SELECT 1 FROM provider_keys WHERE tenant_id = $1) AS k",
            tenant_id,
        )
        return rows == 0

    await wait_for(key_gone, timeout=10)
    other_bot = await store.get_bot(db, other_id)
    assert other_bot is not None and other_bot.desired == "stopped"
    assert other_bot.config == {"symbols": ["BTCUSDT"], "mode": "paper", "capital": "100"}
    assert problems_of(page).all() == []
