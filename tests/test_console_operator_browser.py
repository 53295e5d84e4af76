"""The operator console in a real browser (Debian's chromium through Playwright): sign in,
walk every operator page from the navigation, and do the actions with the mouse: requeue a dead
letter, revoke a license, change a plan, start a bot. Each outcome is read back from the
database (or RabbitMQ), and no page logs a CSP refusal or a script error."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from playwright.async_api import Page, expect

from colmena.config import Settings
from tests.browser_support import ConsoleServer, add_admin, login_admin, problems_of
from tests.conftest import queue_counts, wait_for
from tests.console_data import ConsoleData, seed_console

NAVIGATION = ["Overview", "Payments", "Dead letters", "Licenses", "Invoices", "Rates", "Tenants"]


async def _signed_in(page: Page, server: ConsoleServer, db: asyncpg.Connection) -> ConsoleData:
    data = await seed_console(db, server.settings)
    name, password = await add_admin(db, server.settings)
    await login_admin(page, server.base_url, name, password)
    return data


async def test_walk_every_operator_page(
    page: Page, console_server: ConsoleServer, db: asyncpg.Connection
) -> None:
    data = await _signed_in(page, console_server, db)
    await page.goto(console_server.url("/console/admin/"))
    for label in NAVIGATION:
        await page.get_by_role("navigation", name="Main").get_by_role("link", name=label).click()
        await expect(page.get_by_role("heading", level=1)).to_be_visible()
        assert await page.title() != ""
    await page.goto(console_server.url("/console/admin/payments"))
    await page.get_by_label("Provider id, email, order or payment number").fill(data.emails[1])
    await page.get_by_role("button", name="Search").click()
    await page.get_by_role("link", name=str(data.payment_ids[1]), exact=True).click()
    await expect(page.get_by_role("heading", name="Provider events")).to_be_visible()
    await page.get_by_role("link", name=data.license_ids[1]).click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text(data.license_ids[1])
    await page.goto(console_server.url(f"/console/admin/tenants/{data.tenants[0].id}"))
    await expect(page.get_by_role("log")).to_contain_text(f"bot {data.tenants[0].id} ready")
    assert problems_of(page).all() == []


async def test_requeue_a_dead_letter_and_revoke_a_license(
    page: Page, console_server: ConsoleServer, db: asyncpg.Connection, settings: Settings
) -> None:
    data = await _signed_in(page, console_server, db)
    await page.goto(console_server.url("/console/admin/dead-letters?queue=bots"))
    row = page.get_by_role("row").filter(has_text=data.dead_letter.message_id)
    await row.get_by_role("button", name="Requeue").click()
    await expect(page.locator(".notice")).to_contain_text("Requeued 1 dead letter(s)")
    ready, _, dead = await asyncio.to_thread(queue_counts, settings.queue_prefix + "bots")
    assert (ready, dead) == (1, 2)

    license_id = data.license_ids[0]
    await page.goto(console_server.url(f"/console/admin/licenses/{license_id}"))
    await page.get_by_label("Reason for revoking").fill("refund outside the provider")
    await page.get_by_role("button", name="Revoke").click()
    await expect(page.get_by_role("heading", name="Please confirm")).to_be_visible()
    await page.get_by_role("button", name="Yes, do it").click()
    await expect(page.locator(".notice")).to_contain_text("License revoked")
    row_ = await db.fetchrow(
        "SELECT revoked_at, revoked_reason FROM licenses WHERE id = $1", uuid.UUID(license_id)
    )
    assert row_["revoked_at"] is not None
    assert row_["revoked_reason"] == "refund outside the provider"
    assert problems_of(page).all() == []


async def test_change_a_plan_and_start_a_bot(
    page: Page, console_server: ConsoleServer, db: asyncpg.Connection, start_worker
) -> None:
    data = await _signed_in(page, console_server, db)
    tenant_id = data.tenants[0].id
    worker = start_worker(queues=["bots"])
    await page.goto(console_server.url(f"/console/admin/tenants/{tenant_id}"))
    await page.get_by_label("New plan").select_option("pro")
    await page.get_by_role("button", name="Change the plan").click()
    await expect(page.get_by_text(f"Move tenant {tenant_id} from plan free")).to_be_visible()
    await page.get_by_role("button", name="Yes, do it").click()
    await expect(page.locator(".notice")).to_contain_text("Plan change queued")

    async def plan() -> bool:
        return await db.fetchval("SELECT plan FROM tenants WHERE id = $1", tenant_id) == "pro"

    await wait_for(plan, timeout=30)
    # The start's command would reach a bot runtime: this test stops at the queued command.
    await asyncio.to_thread(worker.worker.stop)

    await page.get_by_role("button", name="Start", exact=True).click()
    await expect(page.locator(".notice")).to_contain_text("Command queued")
    assert await db.fetchval("SELECT desired FROM bots WHERE tenant_id = $1", tenant_id) == (
        "running"
    )
    command = await db.fetchrow(
        "SELECT kind, requested_by FROM bot_commands WHERE tenant_id = $1", tenant_id
    )
    assert (command["kind"], command["requested_by"]) == ("start", "admin")
    assert problems_of(page).all() == []
    # The page follows a running bot's log; leave it so the stream closes before the server.
    await page.goto("about:blank")
