"""The operator console's pages and actions, through the real ingress (aiohttp test client),
on the real PostgreSQL and RabbitMQ: each action's outcome is read back from the database (or
the broker), with the audit row naming the admin; refusals change nothing."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from colmena.config import Settings
from tests.bots_support import add_tenant
from tests.conftest import queue_counts, wait_for
from tests.console_data import ConsoleData, seed_console
from tests.console_support import (
    add_admin,
    console,
    console_settings,
    csrf_in,
    sign_in_admin,
    sign_in_tenant,
)


@dataclass
class Operator:
    client: TestClient
    data: ConsoleData
    db: asyncpg.Connection
    settings: Settings

    async def token(self, path: str = "/console/admin/tenants") -> str:
        response = await self.client.get(path)
        assert response.status == 200, await response.text()
        return csrf_in(await response.text())

    async def post(self, path: str, **fields: str) -> tuple[int, str, str | None]:
        """POST a form with a valid CSRF token: (status, body, Location)."""
        token = await self.token()
        response = await self.client.post(
            path, data={"csrf_token": token, **fields}, allow_redirects=False
        )
        return response.status, await response.text(), response.headers.get("Location")

    async def audit(self, action: str) -> list[asyncpg.Record]:
        return await self.db.fetch(
            "SELECT actor, action, subject_kind, subject_id, before, after, cause "
            "FROM audit_events WHERE action = $1 ORDER BY id",
            action,
        )


@pytest.fixture
async def operator(settings: Settings, db: asyncpg.Connection) -> AsyncIterator[Operator]:
    data = await seed_console(db, settings)
    await add_admin(db, "alice")
    active = console_settings(settings)
    async with console(active) as client:
        await sign_in_admin(client, "alice")
        yield Operator(client=client, data=data, db=db, settings=active)


def _pages(data: ConsoleData) -> list[str]:
    return [
        "/console/admin/",
        "/console/admin/payments",
        f"/console/admin/payments/{data.payment_ids[0]}",
        "/console/admin/dead-letters",
        f"/console/admin/dead-letters/bots/{data.dead_letter.message_id}",
        "/console/admin/dead-letters/bots/2",
        "/console/admin/licenses",
        f"/console/admin/licenses/{data.license_ids[0]}",
        "/console/admin/invoices",
        f"/console/admin/invoices/{data.invoice_ids[0]}",
        "/console/admin/rates",
        "/console/admin/tenants",
        f"/console/admin/tenants/{data.tenants[0].id}",
    ]


async def test_every_operator_page_renders_in_spanish_and_english(operator: Operator) -> None:
    for path in _pages(operator.data):
        response = await operator.client.get(path)
        assert response.status == 200, (path, (await response.text())[:2000])
        assert response.content_type == "text/html"
    spanish = await (await operator.client.get("/console/admin/")).text()
    assert "Resumen" in spanish and "Mensajes muertos" in spanish
    english = await (await operator.client.get("/console/admin/", cookies={"lang": "en"})).text()
    assert "Overview" in english and "Dead letters" in english


def zone_at_midday(now: datetime) -> str:
    """A time zone whose clock reads 12:xx at `now`: "today" there began hours before the console
    data's payments (seeded up to four hours back), whenever the test runs."""
    hours_ahead = (12 - now.hour) % 24
    if hours_ahead > 12:
        hours_ahead -= 24
    return f"Etc/GMT{-hours_ahead:+d}"  # POSIX sign: Etc/GMT-5 is five hours ahead of UTC


def test_the_midday_zone_reads_noon() -> None:
    for hour in range(24):
        now = datetime(2026, 12, 2, hour, 30, tzinfo=UTC)
        assert now.astimezone(ZoneInfo(zone_at_midday(now))).hour == 12


async def test_the_overview_counts_and_links(operator: Operator) -> None:
    midday = operator.settings.model_copy(
        update={"operator_time_zone": zone_at_midday(datetime.now(UTC))}
    )
    async with console(midday) as client:
        await sign_in_admin(client, "alice")
        html = await (await client.get("/console/admin/", cookies={"lang": "en"})).text()
        assert '<a href="/console/admin/dead-letters">3</a>' in html.replace(' class="stat"', "")
        assert '<a href="/console/admin/dead-letters?queue=bots">3</a>' in html
        assert '<a href="/console/admin/payments">5</a>' in html
        assert "Payments per hour, last 24 hours" in html and "<svg" in html
        assert "<polyline" in html  # the BCV series of the seeded rates


async def test_operator_pages_need_an_admin_session(
    settings: Settings, db: asyncpg.Connection
) -> None:
    tenant_id, token = await add_tenant(db)
    async with console(console_settings(settings)) as client:
        anonymous = await client.get("/console/admin/payments", allow_redirects=False)
        assert anonymous.status == 303
        assert anonymous.headers["Location"].startswith("/console/login")
        await sign_in_tenant(client, token)
        for path in ("/console/admin/", f"/console/admin/tenants/{tenant_id}"):
            response = await client.get(path, allow_redirects=False)
            assert response.status == 303, path
            assert response.headers["Location"].startswith("/console/login")
        refused = await client.post(
            f"/console/admin/tenants/{tenant_id}/start", data={}, allow_redirects=False
        )
        assert refused.status in (303, 403)
    assert await db.fetchval("SELECT desired FROM bots WHERE tenant_id = $1", tenant_id) == (
        "stopped"
    )


async def test_actions_refuse_a_missing_or_wrong_csrf_token(operator: Operator) -> None:
    license_id = operator.data.license_ids[0]
    path = f"/console/admin/licenses/{license_id}/revoke"
    for data in ({"confirmed": "yes"}, {"confirmed": "yes", "csrf_token": "x" * 43}):
        response = await operator.client.post(path, data=data, allow_redirects=False)
        assert response.status == 403
    tenant = operator.data.tenants[0].id
    response = await operator.client.post(
        f"/console/admin/tenants/{tenant}/start", data={}, allow_redirects=False
    )
    assert response.status == 403
    revoked = await operator.db.fetchval(
        "SELECT revoked_at FROM licenses WHERE id = $1", uuid.UUID(license_id)
    )
    assert revoked is None
    assert await operator.db.fetchval("SELECT count(*) FROM bot_commands") == 0


async def test_revoke_asks_first_then_revokes_attributed_to_the_admin(operator: Operator) -> None:
    license_id = operator.data.license_ids[0]
    path = f"/console/admin/licenses/{license_id}/revoke"
    status, body, _ = await operator.post(path, reason="fraud reported")
    assert status == 200 and 'name="confirmed" value="yes"' in body
    assert 'value="fraud reported"' in body
    unchanged = await operator.db.fetchval(
        "SELECT revoked_at FROM licenses WHERE id = $1", uuid.UUID(license_id)
    )
    assert unchanged is None

    status, _, location = await operator.post(path, reason="fraud reported", confirmed="yes")
    assert status == 303 and location == f"/console/admin/licenses/{license_id}"
    row = await operator.db.fetchrow(
        "SELECT revoked_at, revoked_reason FROM licenses WHERE id = $1", uuid.UUID(license_id)
    )
    assert row["revoked_at"] is not None and row["revoked_reason"] == "fraud reported"
    [audit] = await operator.db.fetch(
        "SELECT actor, cause FROM audit_events WHERE subject_kind = 'license' "
        "AND subject_id = $1 AND action = 'license.revoked'",
        license_id,
    )
    assert (audit["actor"], audit["cause"]) == ("admin:alice", "console")
    page = await operator.client.get(location)
    assert "Licencia revocada" in await page.text()  # the notice, once


async def test_resend_records_a_new_email_and_its_message(operator: Operator) -> None:
    license_id = operator.data.license_ids[0]
    path = f"/console/admin/licenses/{license_id}/resend"
    status, _, _ = await operator.post(path, confirmed="yes")
    assert status == 303
    reasons = await operator.db.fetch(
        "SELECT reason FROM license_emails WHERE license_id = $1 ORDER BY id",
        uuid.UUID(license_id),
    )
    assert [row["reason"] for row in reasons] == ["purchase", "resend"]
    actor = await operator.db.fetchval(
        "SELECT actor FROM outbox WHERE actor = 'send_license_email' AND dedupe_key LIKE "
        "'license-email:%'"
    )
    assert actor == "send_license_email"
    [audit] = await operator.audit("license.resend")
    assert audit["actor"] == "admin:alice" and audit["subject_id"] == license_id
    revoked = operator.data.license_ids[-1]
    status, _, _ = await operator.post(f"/console/admin/licenses/{revoked}/resend", confirmed="yes")
    assert status == 409


async def test_requeue_one_dead_letter(operator: Operator) -> None:
    message_id = operator.data.dead_letter.message_id
    status, _, location = await operator.post(
        f"/console/admin/dead-letters/bots/{message_id}/requeue"
    )
    assert status == 303 and location == "/console/admin/dead-letters?queue=bots"
    ready, _, dead = await asyncio.to_thread(queue_counts, operator.settings.queue_prefix + "bots")
    assert (ready, dead) == (1, 2)  # the two undecodable ones stay
    [audit] = await operator.audit("deadletter.requeue")
    assert audit["actor"] == "admin:alice" and audit["subject_id"] == message_id
    assert audit["before"]["reason"] == "ValueError: the engine was down"


async def test_an_undecodable_letter_is_shown_raw_and_never_requeued(operator: Operator) -> None:
    listing = await (await operator.client.get("/console/admin/dead-letters")).text()
    assert "ilegible" in listing  # "undecodable", in Spanish
    status, body, _ = await operator.post("/console/admin/dead-letters/bots/2/requeue")
    assert status == 409, body
    ready, _, dead = await asyncio.to_thread(queue_counts, operator.settings.queue_prefix + "bots")
    assert (ready, dead) == (0, 3)


async def test_bulk_requeue_counts_first_then_moves_the_filtered_set(operator: Operator) -> None:
    actor = operator.data.dead_letter.actor_name
    status, body, _ = await operator.post(
        "/console/admin/dead-letters/requeue", queue="bots", reason="ENGINE"
    )
    assert status == 200
    assert '<strong id="dry-run-count">1</strong>' in body
    ready, _, dead = await asyncio.to_thread(queue_counts, operator.settings.queue_prefix + "bots")
    assert (ready, dead) == (0, 3)  # the dry run moved nothing
    status, body, _ = await operator.post(
        "/console/admin/dead-letters/requeue", queue="bots", actor="nobody"
    )
    assert '<strong id="dry-run-count">0</strong>' in body

    status, _, location = await operator.post(
        "/console/admin/dead-letters/requeue",
        queue="bots",
        actor=actor,
        reason="ENGINE",
        confirmed="yes",
    )
    assert status == 303 and location is not None
    ready, _, dead = await asyncio.to_thread(queue_counts, operator.settings.queue_prefix + "bots")
    assert (ready, dead) == (1, 2)
    assert len(await operator.audit("deadletter.requeue")) == 1
    result = await operator.client.get(location)
    notice = "1 mensaje(s) muerto(s) reencolado(s); 0 ilegible(s) se quedan donde estaban"
    assert notice in await result.text()


async def test_invoice_retry_downloads_and_bad_ids(operator: Operator) -> None:
    stamped, failed = operator.data.invoice_ids[0], operator.data.invoice_ids[2]
    xml = await operator.client.get(f"/console/admin/invoices/{stamped}/xml")
    assert xml.status == 200 and await xml.read() == b"<cfdi:Comprobante/>"
    assert xml.headers["Content-Disposition"].startswith('attachment; filename="A')
    pdf = await operator.client.get(f"/console/admin/invoices/{stamped}/pdf")
    assert pdf.status == 404  # not rendered yet
    status, _, _ = await operator.post(f"/console/admin/invoices/{failed}/retry")
    assert status == 303
    invoice = await operator.db.fetchrow(
        "SELECT status, failure_code FROM invoices WHERE id = $1", failed
    )
    assert invoice["failure_code"] is None and invoice["status"] != "failed"
    queued = await operator.db.fetchval(
        "SELECT args FROM outbox WHERE actor = 'stamp_invoice' AND queue = 'stamping'"
    )
    assert queued is not None
    actors = await operator.db.fetch(
        "SELECT actor FROM audit_events WHERE subject_kind = 'invoice' AND subject_id = $1 "
        "AND cause = 'console'",
        str(failed),
    )
    assert [row["actor"] for row in actors] == ["admin:alice"]
    missing = await operator.client.get("/console/admin/invoices/999999")
    assert missing.status == 404
    bad_cursor = await operator.client.get("/console/admin/invoices?cursor=%21%21")
    assert bad_cursor.status == 400


async def test_accept_a_suspect_rate(operator: Operator) -> None:
    rate_id = operator.data.suspect_rate_id
    status, body, _ = await operator.post(f"/console/admin/rates/{rate_id}/accept")
    assert status == 200 and 'name="confirmed"' in body
    assert await operator.db.fetchval("SELECT status FROM rates WHERE id = $1", rate_id) == (
        "suspect"
    )
    status, _, _ = await operator.post(f"/console/admin/rates/{rate_id}/accept", confirmed="yes")
    assert status == 303
    assert await operator.db.fetchval("SELECT status FROM rates WHERE id = $1", rate_id) == (
        "confirmed"
    )
    actors = await operator.db.fetch(
        "SELECT actor FROM audit_events WHERE subject_kind = 'rate' AND subject_id = $1",
        str(rate_id),
    )
    assert [row["actor"] for row in actors] == ["admin:alice"]


async def test_start_stop_and_reset_a_bot(operator: Operator) -> None:
    tenant_id = operator.data.tenants[0].id
    base = f"/console/admin/tenants/{tenant_id}"
    status, _, location = await operator.post(base + "/start")
    assert status == 303 and location == base
    assert await operator.db.fetchval(
        "SELECT desired FROM bots WHERE tenant_id = $1", tenant_id
    ) == ("running")
    command = await operator.db.fetchrow(
        "SELECT kind, requested_by FROM bot_commands WHERE tenant_id = $1", tenant_id
    )
    assert (command["kind"], command["requested_by"]) == ("start", "admin")
    [audit] = await operator.audit("bot.start")
    assert audit["actor"] == "admin:alice" and audit["subject_id"] == tenant_id

    status, _, _ = await operator.post(base + "/stop")
    assert await operator.db.fetchval(
        "SELECT desired FROM bots WHERE tenant_id = $1", tenant_id
    ) == ("stopped")

    await operator.db.execute(
        "UPDATE bots SET crashloop = true, crashloop_reason = 'five exits', streak = 5 "
        "WHERE tenant_id = $1",
        tenant_id,
    )
    status, _, _ = await operator.post(base + "/reset")
    assert status == 303
    row = await operator.db.fetchrow(
        "SELECT crashloop, streak FROM bots WHERE tenant_id = $1", tenant_id
    )
    assert (row["crashloop"], row["streak"]) == (False, 0)
    assert len(await operator.audit("bot.reset")) == 1
    unknown = await operator.post("/console/admin/tenants/nobody-here/reset")
    assert unknown[0] == 404


async def test_change_a_plan_confirms_and_the_worker_applies_it(
    operator: Operator, start_worker
) -> None:
    tenant_id = operator.data.tenants[0].id
    path = f"/console/admin/tenants/{tenant_id}/plan"
    status, body, _ = await operator.post(path, plan="pro")
    assert status == 200 and 'name="confirmed"' in body
    assert await operator.db.fetchval("SELECT plan FROM tenants WHERE id = $1", tenant_id) == (
        "free"
    )
    start_worker(queues=["bots"])
    status, _, _ = await operator.post(path, plan="pro", confirmed="yes")
    assert status == 303
    [audit] = await operator.audit("tenant.plan_change")
    assert audit["actor"] == "admin:alice"
    assert (audit["before"], audit["after"]) == ({"plan": "free"}, {"plan": "pro"})

    async def applied() -> bool:
        return (
            await operator.db.fetchval("SELECT plan FROM tenants WHERE id = $1", tenant_id)
        ) == "pro"

    await wait_for(applied, timeout=30)
    change = await operator.db.fetchrow(
        "SELECT source, outcome FROM plan_changes WHERE tenant_ref = $1", tenant_id
    )
    assert (change["source"], change["outcome"]) == ("console:admin:alice", "applied")
    status, _, _ = await operator.post(path, plan="no-such-plan", confirmed="yes")
    assert status == 400


async def test_payment_search_and_timeline(operator: Operator) -> None:
    data = operator.data
    by_provider = await operator.client.get(
        "/console/admin/payments", params={"q": data.provider_payment_ids[1]}
    )
    text = await by_provider.text()
    assert f'href="/console/admin/payments/{data.payment_ids[1]}"' in text
    assert f'href="/console/admin/payments/{data.payment_ids[0]}"' not in text
    by_email = await operator.client.get(
        "/console/admin/payments", params={"q": data.emails[2].upper()}
    )
    assert f'href="/console/admin/payments/{data.payment_ids[2]}"' in await by_email.text()
    timeline = await (
        await operator.client.get(f"/console/admin/payments/{data.payment_ids[0]}")
    ).text()
    assert f'href="/console/admin/licenses/{data.license_ids[0]}"' in timeline
    assert f'href="/console/admin/invoices/{data.invoice_ids[0]}"' in timeline
    assert "already approved" in timeline  # the poll that changed nothing
    missing = await operator.client.get("/console/admin/payments/99999999")
    assert missing.status == 404


async def test_lists_page_with_cursors(operator: Operator) -> None:
    await operator.db.execute(
        """
        INSERT INTO payments (provider, provider_payment_id, amount_minor, currency, status,
            status_at)
        SELECT 'stripe', 'pi_bulk_' || n, 100, 'USD', 'pending', now()
        FROM generate_series(1, 120) AS n
        """
    )
    seen: list[str] = []
    url: str | None = "/console/admin/payments?q=&status=pending"
    pages = 0
    while url is not None:
        text = await (await operator.client.get(url)).text()
        seen += re.findall(r'<th scope="row"><a href="/console/admin/payments/(\d+)"', text)
        found = re.search(r'href="([^"]+)" rel="next"', text)
        url = found.group(1).replace("&amp;", "&") if found else None
        pages += 1
    assert pages == 3
    assert len(seen) == len(set(seen)) == 121  # the 120 and the seeded pending one
    assert seen == sorted(seen, key=int, reverse=True)


async def test_an_operator_follows_a_tenants_log(operator: Operator) -> None:
    tenant_id = operator.data.tenants[0].id  # its bot is stopped: the stream ends
    page = await (await operator.client.get(f"/console/admin/tenants/{tenant_id}")).text()
    assert f"bot {tenant_id} ready" in page
    assert "live-logs.js" in page
    stream = await operator.client.get(
        f"/console/admin/tenants/{tenant_id}/logs/stream", params={"after": "0"}
    )
    assert stream.status == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    body = await stream.text()  # the bot is stopped: the stream ends after its lines
    assert f"bot {tenant_id} ready" in body


async def test_ask_the_sat_to_cancel_a_stamped_invoice(operator: Operator) -> None:
    invoice_id = operator.data.invoice_ids[0]
    await operator.db.execute(
        "UPDATE invoices SET stamped_xml = $2 WHERE id = $1",
        invoice_id,
        b'<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Total="499.00" '
        b'Moneda="MXN" TipoDeComprobante="I"/>',
    )
    path = f"/console/admin/invoices/{invoice_id}/cancel"
    status, body, _ = await operator.post(path, motive="02")
    assert status == 200 and 'name="confirmed"' in body
    assert await operator.db.fetchval("SELECT count(*) FROM invoice_cancellations") == 0
    status, _, location = await operator.post(path, motive="02", confirmed="yes")
    assert status == 303 and location == f"/console/admin/invoices/{invoice_id}"
    row = await operator.db.fetchrow(
        "SELECT state, motive, source FROM invoice_cancellations WHERE invoice_id = $1",
        invoice_id,
    )
    assert (row["state"], row["motive"], row["source"]) == ("requested", "02", "operator")
    assert await operator.db.fetchval(
        "SELECT args FROM outbox WHERE actor = 'file_cancellation'"
    ) == [invoice_id]
    actors = await operator.db.fetch(
        "SELECT DISTINCT actor FROM audit_events WHERE subject_id = $1 AND cause = 'console' "
        "AND subject_kind IN ('invoice', 'invoice_cancellation')",
        str(invoice_id),
    )
    assert [row["actor"] for row in actors] == ["admin:alice"]
    again = await operator.post(path, motive="02", confirmed="yes")
    assert again[0] == 409  # already requested: refused, nothing added
    assert (
        await operator.db.fetchval("SELECT count(*) FROM outbox WHERE actor = 'file_cancellation'")
        == 1
    )
    unstamped = operator.data.invoice_ids[2]
    refused = await operator.post(
        f"/console/admin/invoices/{unstamped}/cancel", motive="02", confirmed="yes"
    )
    assert refused[0] == 409
