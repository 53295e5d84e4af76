"""A tenant's console shows that tenant's things only, page by page and fragment by fragment.

As the API's isolation tests do for every tenant route: two tenants, B's things made easy to
spot (its tenant id, config symbol and capital, key endings, log line, crash-loop reason,
webhook URL), and
every tenant page, the live log stream, the key pages and every action of A's session read for
them. B's own session shows them (so the check can fail), A's never does; a tenant id given in
a query or a form field is ignored, A's actions leave B's bot, config, commands and keys as they
were, and operator pages send a tenant session to the login page.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from colmena.config import Settings
from colmena.domain.tenants import new_token, token_digest
from colmena.store import bot_logs
from colmena.store import tenants as store
from tests.bots_support import add_tenant, bot_settings
from tests.test_console_tenant import TenantBrowser, add_deliveries


@pytest.fixture
def console_settings(settings: Settings, tmp_path: Path) -> Settings:
    return bot_settings(settings, tmp_path, "process", None)


TENANT_PAGES = (
    "/console/tenant/",
    "/console/tenant/config",
    "/console/tenant/logs",
    "/console/tenant/keys",
    "/console/tenant/notifications",
)


async def seed(db, marker: str, symbol: str, capital: str, key_end: str) -> str:
    """A tenant whose every page shows `marker`-tagged values; returns its id."""
    tenant_id, _ = await add_tenant(
        db, plan="pro", config={"symbols": [symbol], "mode": "paper", "capital": capital}
    )
    await db.execute(
        "UPDATE bots SET desired = 'running', observed = 'crashloop', crashloop = true, "
        "crashloop_reason = $2 WHERE tenant_id = $1",
        tenant_id,
        f"crash-{marker}",
    )
    await db.execute(
        "INSERT INTO provider_keys (tenant_id, provider, ciphertext, last4, key_version) "
        "VALUES ($1, 'kraken', 'x', $2, 'v1')",
        tenant_id,
        f"****{key_end}",
    )
    await db.execute(
        "INSERT INTO pending_provider_keys (tenant_id, provider, sealed, last4) "
        "VALUES ($1, 'bybit', 'x', $2)",
        tenant_id,
        f"****{key_end[::-1]}",
    )
    await bot_logs.append(db, tenant_id, 1, [(datetime.now(UTC), f"log-{marker}")])
    await add_deliveries(db, tenant_id, f"https://hooks.example.com/{marker}", 2)
    return tenant_id


async def state_of(db, tenant_id: str) -> tuple:
    """Everything of a tenant an action could change."""
    bot = await store.get_bot(db, tenant_id)
    assert bot is not None
    commands = await db.fetch(
        "SELECT kind FROM bot_commands WHERE tenant_id = $1 ORDER BY created_at", tenant_id
    )
    keys = await db.fetch(
        "SELECT provider, last4 FROM provider_keys WHERE tenant_id = $1 UNION ALL "
        "SELECT provider, last4 FROM pending_provider_keys WHERE tenant_id = $1 ORDER BY 1",
        tenant_id,
    )
    return (
        bot.desired,
        bot.config,
        bot.config_version,
        [row["kind"] for row in commands],
        [tuple(row) for row in keys],
    )


async def stream_text(browser: TenantBrowser, path: str, until: bytes) -> bytes:
    """What a log stream sends up to the line holding `until` and the next keepalive."""
    seen: list[bytes] = []
    async with browser.session.get(browser.base + path) as stream:
        assert stream.status == 200
        while not any(until in line for line in seen) or b": keepalive\n" not in seen[-1:]:
            seen.append(await asyncio.wait_for(stream.content.readline(), 10))
    return b"".join(seen)


async def test_a_tenant_sees_nothing_of_another_tenant(db, console_settings, make_client) -> None:
    marker_a, marker_b = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    a = await seed(db, marker_a, "AAAUSDT", "111.25", "A1A1")
    b = await seed(db, marker_b, "BBBUSDT", "777.75", "B2B2")
    tokens = {}
    for tenant_id in (a, b):
        tokens[tenant_id] = new_token()
        await store.set_token(db, tenant_id, token_digest(tokens[tenant_id]))
    client = await make_client(console_settings)
    as_a, as_b = TenantBrowser(client), TenantBrowser(client)
    b_values = [
        b,
        "BBBUSDT",
        "777.75",
        "****B2B2",
        "****2B2B",
        f"log-{marker_b}",
        f"crash-{marker_b}",
        f"hooks.example.com/{marker_b}",
    ]
    a_values = [
        a,
        "AAAUSDT",
        "111.25",
        "****A1A1",
        "****1A1A",
        f"log-{marker_a}",
        f"crash-{marker_a}",
        f"hooks.example.com/{marker_a}",
    ]
    try:
        await as_a.sign_in(tokens[a])
        await as_b.sign_in(tokens[b])

        # B's session shows B's values: the checks below can fail.
        b_pages = "".join([await as_b.get(path) for path in TENANT_PAGES])
        assert all(value in b_pages for value in b_values)

        # Pages asked with B's id in the query echo it (the language switch's return path), so
        # those are read for B's other values; every other answer for all of them.
        seen_by_a: list[str] = []
        smuggled: list[str] = []
        for path in TENANT_PAGES:
            seen_by_a.append(await as_a.get(path))
            smuggled.append(await as_a.get(f"{path}?tenant={b}&tenant_id={b}"))
        shown = "".join(seen_by_a)
        assert all(value in shown for value in a_values), "A's own pages show A's things"

        # A's key pages for the provider both have: A's key only.
        replace = await as_a.get("/console/tenant/keys/kraken/replace")
        assert "****A1A1" in replace
        seen_by_a.append(replace)

        # The live log stream, with B's id smuggled in: A's line only.
        streamed = await stream_text(
            as_a, f"/console/tenant/logs/stream?after=0&tenant={b}", f"log-{marker_a}".encode()
        )
        seen_by_a.append(streamed.decode())

        # Every action of A's session, with B's id in the form: it acts on A alone.
        before_b = await state_of(db, b)
        actions = [
            ("/console/tenant/bot/stop", {}),
            ("/console/tenant/bot/restart", {}),
            (
                "/console/tenant/config",
                {"symbols": "CCCUSDT", "mode": "paper", "capital": "5"},
            ),
            ("/console/tenant/keys", {"provider": "okx", "key": "sk-" + uuid.uuid4().hex}),
            ("/console/tenant/keys/kraken/remove", {"confirmed": "yes"}),
        ]
        for path, data in actions:
            status, text, _ = await as_a.post(path, {**data, "tenant": b, "tenant_id": b})
            assert status in (200, 303), (path, status)
            seen_by_a.append(text)
            seen_by_a.append(await as_a.get("/console/tenant/"))
        status, text, _ = await as_a.post("/console/tenant/keys/bybit/remove")
        assert status == 200 and "****1A1A" in text  # the confirmation names A's key
        seen_by_a.append(text)
        assert await state_of(db, b) == before_b, "B's bot, config, commands and keys held"
        after_a = await state_of(db, a)
        assert after_a[0] == "running" and after_a[1]["symbols"] == ["CCCUSDT"]
        assert [provider for provider, _ in after_a[4]] == ["bybit", "okx"]

        everything = "".join(seen_by_a)
        leaked = [value for value in b_values if value in everything]
        assert leaked == [], f"A's console showed B's {leaked}"
        echoed = "".join(smuggled)
        leaked = [value for value in b_values[1:] if value in echoed]
        assert leaked == [], f"A's console showed B's {leaked} when asked for B"

        # A's session cannot reach B's things by name either.
        status, text, _ = await as_a.request("GET", f"/console/tenant/keys/{'x' * 3}/replace")
        assert status == 404 and "****B2B2" not in text
    finally:
        await as_a.close()
        await as_b.close()


async def test_operator_pages_send_a_tenant_session_to_login(
    db, console_settings, make_client
) -> None:
    tenant_id, token = await add_tenant(db)
    client = await make_client(console_settings)
    browser = TenantBrowser(client)
    try:
        await browser.sign_in(token)
        for path in (
            "/console/admin/",
            f"/console/admin/tenants/{tenant_id}",
            f"/console/admin/tenants/{tenant_id}/logs/stream",
        ):
            status, _, headers = await browser.request("GET", path)
            assert status == 303, path
            assert headers["Location"].startswith("/console/login?next=")
        status, _, headers = await browser.post(f"/console/admin/tenants/{tenant_id}/stop")
        assert status == 303 and headers["Location"].startswith("/console/login")
        bot = await store.get_bot(db, tenant_id)
        assert bot is not None and bot.desired == "stopped"
        assert (
            await db.fetchval("SELECT count(*) FROM bot_commands WHERE tenant_id = $1", tenant_id)
            == 0
        )
    finally:
        await browser.close()
