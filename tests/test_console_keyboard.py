"""Every console action done with the keyboard alone, in chromium, checked in the database.

Each run reaches its controls with Tab only (`tab_to` fails if a control cannot be reached
that way or shows no focus indicator), types into the fields it lands on, and activates
buttons with Enter or Space; confirmation pages are answered the same way. The page each
action leads to (a confirmation, a dry-run count, the result with its notice) is checked by
axe-core too: those pages are reached by POST, so the GET walk of test_console_a11y.py never
sees them. The mouse versions of these flows are in the operator and tenant console tests.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from playwright.async_api import Page, expect

from colmena.config import Settings
from colmena.domain.key_sealing import encode_key
from tests.bots_support import SEAL_PUBLIC_KEY
from tests.browser_support import (
    ConsoleServer,
    add_admin,
    axe_violations,
    describe,
    login_admin,
    login_tenant,
    problems_of,
    tab_to,
)
from tests.conftest import queue_counts, wait_for
from tests.console_data import ConsoleData, seed_console


async def _press(page: Page, key: str) -> None:
    """Press `key` on the focused control and wait for the page it leads to."""
    async with page.expect_navigation():
        await page.keyboard.press(key)


async def _accessible(page: Page) -> None:
    violations = await axe_violations(page)
    assert violations == [], f"{page.url}:\n{describe(violations)}"
    assert problems_of(page).all() == []


async def _confirm(page: Page, key: str = "Space") -> None:
    """Answer the confirmation page: check it, Tab to its submit button, press `key`."""
    await expect(page.get_by_role("heading", name="Please confirm")).to_be_visible()
    await _accessible(page)
    await tab_to(page, page.get_by_role("button", name="Yes, do it"))
    await _press(page, key)


@pytest.fixture
async def seeded(console_server: ConsoleServer, db) -> ConsoleData:
    return await seed_console(db, console_server.settings)


@pytest.fixture
async def admin_page(page: Page, console_server: ConsoleServer, db, seeded) -> Page:
    name, password = await add_admin(db, console_server.settings)
    await login_admin(page, console_server.base_url, name, password)
    return page


async def test_requeue_one_dead_letter(
    admin_page: Page, console_server: ConsoleServer, seeded: ConsoleData, settings: Settings
) -> None:
    page, queue = admin_page, settings.queue_prefix + seeded.dead_letter_queue
    letter = f"/console/admin/dead-letters/{seeded.dead_letter_queue}/"
    await page.goto(console_server.url(letter + seeded.dead_letter.message_id))
    await tab_to(page, page.get_by_role("button", name="Requeue", exact=True))
    await _press(page, "Enter")
    await wait_for(lambda: asyncio.to_thread(lambda: queue_counts(queue) == (1, 0, 2)))
    await expect(page.locator("body")).to_contain_text("requeued")
    await _accessible(page)


async def test_bulk_requeue_counts_first_then_moves(
    admin_page: Page, console_server: ConsoleServer, seeded: ConsoleData, settings: Settings
) -> None:
    page, queue = admin_page, settings.queue_prefix + seeded.dead_letter_queue
    await page.goto(console_server.url("/console/admin/dead-letters"))
    await tab_to(page, page.get_by_role("button", name="Requeue these…"))
    await _press(page, "Enter")
    await expect(page.locator("#dry-run-count")).to_have_text("1")  # the two raw ones stay
    assert await asyncio.to_thread(queue_counts, queue) == (0, 0, 3), "a dry run moved letters"
    await _accessible(page)
    await tab_to(page, page.get_by_role("button", name="Requeue them"))
    await _press(page, "Space")
    await wait_for(lambda: asyncio.to_thread(lambda: queue_counts(queue) == (1, 0, 2)))
    await _accessible(page)


async def test_revoke_a_license(
    admin_page: Page, console_server: ConsoleServer, seeded: ConsoleData, db
) -> None:
    page, license_id = admin_page, seeded.license_ids[0]
    await page.goto(console_server.url(f"/console/admin/licenses/{license_id}"))
    await tab_to(page, page.get_by_label("Reason for revoking"))
    await page.keyboard.type("chargeback, by keyboard")
    await tab_to(page, page.get_by_role("button", name="Revoke"))
    await _press(page, "Enter")
    assert (
        await db.fetchval("SELECT revoked_at FROM licenses WHERE id = $1", uuid.UUID(license_id))
        is None
    ), "revoked before the confirmation"
    await _confirm(page)
    row = await db.fetchrow(
        "SELECT revoked_at, revoked_reason FROM licenses WHERE id = $1", uuid.UUID(license_id)
    )
    assert row["revoked_at"] is not None and row["revoked_reason"] == "chargeback, by keyboard"
    await _accessible(page)


async def test_resend_a_license(
    admin_page: Page, console_server: ConsoleServer, seeded: ConsoleData, db
) -> None:
    page, license_id = admin_page, uuid.UUID(seeded.license_ids[0])
    await page.goto(console_server.url(f"/console/admin/licenses/{license_id}"))
    await tab_to(page, page.get_by_role("button", name="Resend the link"))
    await _press(page, "Enter")
    await _confirm(page, "Enter")
    resends = await db.fetchval(
        "SELECT count(*) FROM license_emails WHERE license_id = $1 AND reason = 'resend'",
        license_id,
    )
    assert resends == 1
    await _accessible(page)


async def test_accept_a_suspect_rate(
    admin_page: Page, console_server: ConsoleServer, seeded: ConsoleData, db
) -> None:
    page = admin_page
    await page.goto(console_server.url("/console/admin/rates"))
    await tab_to(page, page.get_by_role("button", name="Accept", exact=True))
    await _press(page, "Enter")
    await _confirm(page)
    status = await db.fetchval("SELECT status FROM rates WHERE id = $1", seeded.suspect_rate_id)
    assert status == "confirmed"
    await _accessible(page)


async def test_change_a_tenant_plan(
    admin_page: Page, console_server: ConsoleServer, seeded: ConsoleData, db
) -> None:
    page, tenant = admin_page, seeded.tenants[0]
    await page.goto(console_server.url(f"/console/admin/tenants/{tenant.id}"))
    plans = page.get_by_label("New plan")
    await tab_to(page, plans)
    await page.keyboard.type("enterprise")  # a focused select picks the option typed
    await expect(plans).to_have_value("enterprise")
    await tab_to(page, page.get_by_role("button", name="Change the plan"))
    await _press(page, "Enter")
    await _confirm(page)
    queued = await db.fetchval("SELECT args FROM outbox WHERE actor = 'apply_plan'")
    assert queued is not None and queued[:2] == [tenant.id, "enterprise"]
    await _accessible(page)


@pytest.fixture
async def tenant_server(make_console_server, settings: Settings) -> ConsoleServer:
    """The console with the supervisor's public sealing key, so a tenant can add a key."""
    return await make_console_server(
        settings.model_copy(update={"key_seal_public_key": encode_key(SEAL_PUBLIC_KEY)})
    )


@pytest.fixture
async def tenant_page(page: Page, tenant_server: ConsoleServer, db) -> tuple[Page, ConsoleData]:
    data = await seed_console(db, tenant_server.settings)
    await login_tenant(page, tenant_server.base_url, data.tenants[0].token)
    return page, data


async def test_tenant_starts_the_bot(
    tenant_page: tuple[Page, ConsoleData], tenant_server: ConsoleServer, db
) -> None:
    page, data = tenant_page
    tenant_id = data.tenants[0].id
    await page.goto(tenant_server.url("/console/tenant/"))
    await tab_to(page, page.get_by_role("button", name="Start", exact=True))
    await _press(page, "Enter")
    assert await db.fetchval("SELECT desired FROM bots WHERE tenant_id = $1", tenant_id) == (
        "running"
    )
    kinds = await db.fetchval(
        "SELECT array_agg(kind) FROM bot_commands WHERE tenant_id = $1", tenant_id
    )
    assert kinds == ["start"]
    other = data.tenants[1].id
    assert await db.fetchval("SELECT count(*) FROM bot_commands WHERE tenant_id = $1", other) == 0
    await _accessible(page)


async def test_tenant_changes_the_config(
    tenant_page: tuple[Page, ConsoleData], tenant_server: ConsoleServer, db
) -> None:
    page, data = tenant_page
    tenant_id = data.tenants[0].id
    await page.goto(tenant_server.url("/console/tenant/config"))
    await tab_to(page, page.get_by_label("Capital"))
    await page.keyboard.press("ControlOrMeta+A")
    await page.keyboard.type("250.5")
    await tab_to(page, page.get_by_role("button", name="Save the config"))
    await _press(page, "Enter")
    row = await db.fetchrow(
        "SELECT config, config_version FROM bots WHERE tenant_id = $1", tenant_id
    )
    assert row["config"]["capital"] == "250.5" and row["config_version"] == 2
    await _accessible(page)


async def test_tenant_adds_a_provider_key(
    tenant_page: tuple[Page, ConsoleData], tenant_server: ConsoleServer, db
) -> None:
    page, data = tenant_page
    tenant_id = data.tenants[0].id
    await page.goto(tenant_server.url("/console/tenant/keys"))
    await tab_to(page, page.get_by_label("Provider"))
    await page.keyboard.type("mercadopago")
    await tab_to(page, page.get_by_label("Key", exact=True))
    await page.keyboard.type("APP_USR-" + uuid.uuid4().hex + "5678")
    await tab_to(page, page.get_by_role("button", name="Add the key"))
    await _press(page, "Enter")
    pending = await db.fetchval(
        "SELECT count(*) FROM pending_provider_keys WHERE tenant_id = $1 AND provider = $2",
        tenant_id,
        "mercadopago",
    )
    assert pending == 1
    await expect(page.locator("main")).to_contain_text("5678")
    await _accessible(page)


async def test_tenant_removes_a_provider_key(
    tenant_page: tuple[Page, ConsoleData], tenant_server: ConsoleServer, db
) -> None:
    page, data = tenant_page
    mine, other = data.tenants[0].id, data.tenants[1].id
    await page.goto(tenant_server.url("/console/tenant/keys"))
    await tab_to(page, page.get_by_role("button", name="Remove stripe"))
    await _press(page, "Enter")
    await _confirm(page)
    keys = "SELECT count(*) FROM provider_keys WHERE tenant_id = $1"
    assert await db.fetchval(keys, mine) == 0
    assert await db.fetchval(keys, other) == 1, "another tenant's key went too"
    await _accessible(page)
