"""The tenant console pages on the real ingress, PostgreSQL and RabbitMQ: every page and action.

Each action's outcome is read back from the database (desired state, commands and their outbox
messages, config versions, sealed pending keys, audit rows), and a form without the session's
CSRF token is refused with nothing changed.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from colmena.config import Settings
from colmena.domain.key_sealing import open_sealed
from colmena.store import bot_logs, notifications
from colmena.store import tenants as store
from tests.bots_support import SEAL_PRIVATE_KEY, add_tenant, bearer, bot_settings
from tests.conftest import wait_for
from tests.fuzz_support import capture_logs

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class TenantBrowser:
    """One browser's cookie jar on the test ingress, signed in as one tenant."""

    def __init__(self, client: TestClient, language: str = "en") -> None:
        self.base = str(client.make_url("")).rstrip("/")
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept-Language": language}
        )
        self.csrf = ""

    async def sign_in(self, token: str) -> None:
        page = await self.get("/console/login")
        pre = CSRF.search(page)
        assert pre is not None
        async with self.session.post(
            self.base + "/console/login",
            data={"csrf_token": pre.group(1), "kind": "tenant", "token": token},
            allow_redirects=False,
        ) as response:
            assert response.status == 303, await response.text()
        home = await self.get("/console/tenant/")
        found = CSRF.search(home)
        assert found is not None
        self.csrf = found.group(1)

    async def request(
        self, method: str, path: str, data: dict[str, str] | None = None, *, csrf: bool = True
    ) -> tuple[int, str, aiohttp.typedefs.LooseHeaders]:
        form = dict(data or {})
        if csrf and method == "POST":
            form["csrf_token"] = self.csrf
        async with self.session.request(
            method,
            self.base + path,
            data=form if method == "POST" else None,
            allow_redirects=False,
        ) as response:
            return response.status, await response.text(), response.headers

    async def get(self, path: str) -> str:
        async with self.session.get(self.base + path) as response:
            assert response.status == 200, (path, response.status, await response.text())
            return await response.text()

    async def post(self, path: str, data: dict[str, str] | None = None) -> tuple[int, str, Any]:
        return await self.request("POST", path, data)

    async def close(self) -> None:
        await self.session.close()


@pytest.fixture
def console_settings(settings: Settings, tmp_path: Path) -> Settings:
    return bot_settings(settings, tmp_path, "process", None)


@pytest.fixture
async def browser_for(console_settings, make_client):
    """`await browser_for(token)`: a signed-in tenant browser on one shared test ingress."""
    client = await make_client(console_settings)
    opened: list[TenantBrowser] = []

    async def open_for(token: str) -> TenantBrowser:
        browser = TenantBrowser(client)
        opened.append(browser)
        await browser.sign_in(token)
        return browser

    open_for.client = client  # type: ignore[attr-defined]
    yield open_for
    for browser in opened:
        await browser.close()


async def commands_of(db, tenant_id: str) -> list[tuple[str, str]]:
    rows = await db.fetch(
        "SELECT kind, requested_by FROM bot_commands WHERE tenant_id = $1 ORDER BY created_at",
        tenant_id,
    )
    return [(row["kind"], row["requested_by"]) for row in rows]


# Home and commands ----------------------------------------------------------------------------


async def test_home_shows_status_health_plan_limits_and_crashloop(db, browser_for) -> None:
    tenant_id, token = await add_tenant(db, plan="pro")
    await db.execute(
        "UPDATE bots SET observed = 'crashloop', healthy = false, restarts_total = 7, "
        "crashloop = true, crashloop_reason = 'exited 3 times in 120 s' WHERE tenant_id = $1",
        tenant_id,
    )
    browser = await browser_for(token)
    page = await browser.get("/console/tenant/")
    assert tenant_id in page
    assert '<span data-field="plan">pro</span>' in page
    assert '<dd data-field="restarts">7</dd>' in page
    assert "exited 3 times in 120 s" in page and "restarts paused" in page
    assert '<span class="badge bad">not healthy</span>' in page
    assert "100000" in page  # pro's capital limit
    assert "<dd>5</dd>" in page  # pro's symbols


async def test_start_stop_restart_take_the_api_path(db, browser_for) -> None:
    tenant_id, token = await add_tenant(db)
    browser = await browser_for(token)
    for action, desired in (("start", "running"), ("stop", "stopped"), ("restart", "running")):
        status, _, headers = await browser.post(f"/console/tenant/bot/{action}")
        assert status == 303 and headers["Location"] == "/console/tenant/"
        bot = await store.get_bot(db, tenant_id)
        assert bot is not None and bot.desired == desired
    assert await commands_of(db, tenant_id) == [
        ("start", "tenant"),
        ("stop", "tenant"),
        ("restart", "tenant"),
    ]
    messages = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE actor = 'run_command' AND args->>0 IN "
        "(SELECT id::text FROM bot_commands WHERE tenant_id = $1)",
        tenant_id,
    )
    assert messages == 3
    page = await browser.get("/console/tenant/")
    assert "Restart requested" in page  # the one-shot notice


async def test_commands_over_the_in_flight_bound_are_refused(
    db, console_settings, make_client
) -> None:
    tenant_id, token = await add_tenant(db)
    client = await make_client(
        console_settings.model_copy(update={"tenant_max_commands_in_flight": 2})
    )
    browser = TenantBrowser(client)
    try:
        await browser.sign_in(token)
        for _ in range(2):
            status, _, _ = await browser.post("/console/tenant/bot/restart")
            assert status == 303
        status, page, _ = await browser.post("/console/tenant/bot/stop")
        assert status == 429
        assert 'role="alert"' in page
        bot = await store.get_bot(db, tenant_id)
        assert bot is not None and bot.desired == "running", "the refused stop changed nothing"
        assert len(await commands_of(db, tenant_id)) == 2
    finally:
        await browser.close()


async def test_a_start_over_the_plan_is_refused(db, browser_for) -> None:
    tenant_id, token = await add_tenant(
        db, config={"symbols": ["BTCUSDT"], "mode": "paper", "capital": "5000"}
    )  # free allows 1000: a config stored before a downgrade
    browser = await browser_for(token)
    status, page, _ = await browser.post("/console/tenant/bot/start")
    assert status == 409 and 'role="alert"' in page
    assert await commands_of(db, tenant_id) == []


# Config ---------------------------------------------------------------------------------------


async def test_config_is_saved_through_the_api_model_and_command(db, browser_for) -> None:
    tenant_id, token = await add_tenant(db, plan="pro")
    browser = await browser_for(token)
    page = await browser.get("/console/tenant/config")
    assert "BTCUSDT" in page and '<span data-field="config-version">1</span>' in page
    status, _, headers = await browser.post(
        "/console/tenant/config",
        {"symbols": "ETHUSDT, SOLUSDT\nADAUSDT", "mode": "live", "capital": "0250.50"},
    )
    assert status == 303 and headers["Location"] == "/console/tenant/config"
    bot = await store.get_bot(db, tenant_id)
    assert bot is not None and bot.config_version == 2
    assert bot.config == {
        "symbols": ["ETHUSDT", "SOLUSDT", "ADAUSDT"],
        "mode": "live",
        "capital": "250.5",
    }
    assert await commands_of(db, tenant_id) == [("configure", "tenant")]
    api = await browser_for.client.get("/api/v1/bot/config", headers=bearer(token))
    assert (await api.json())["config"] == bot.config  # the API sees the same config
    # The same config again changes nothing and queues nothing.
    status, _, _ = await browser.post(
        "/console/tenant/config",
        {"symbols": "ETHUSDT SOLUSDT ADAUSDT", "mode": "live", "capital": "250.5"},
    )
    assert status == 303
    assert (await store.get_bot(db, tenant_id)).config_version == 2
    assert len(await commands_of(db, tenant_id)) == 1


async def test_a_bad_config_shows_errors_by_field_and_changes_nothing(db, browser_for) -> None:
    tenant_id, token = await add_tenant(db)  # free: 1 symbol, paper only, capital up to 1000
    browser = await browser_for(token)
    status, page, _ = await browser.post(
        "/console/tenant/config",
        {"symbols": "ETHUSDT eth", "mode": "live", "capital": "0"},
    )
    assert status == 422
    assert 'id="symbols-errors"' in page and "Symbol 2:" in page
    assert 'id="capital-errors"' in page and "capital must be greater than zero" in page
    assert 'aria-invalid="true"' in page
    assert "ETHUSDT eth" in page, "what was typed comes back for correcting"
    status, page, _ = await browser.post(
        "/console/tenant/config", {"symbols": "ETHUSDT SOLUSDT", "mode": "live", "capital": "5"}
    )
    assert status == 422
    assert "plan free allows at most 1 symbol(s)" in page
    assert "plan free allows paper trading only" in page and 'id="mode-errors"' in page
    bot = await store.get_bot(db, tenant_id)
    assert bot is not None and bot.config_version == 1 and bot.config["symbols"] == ["BTCUSDT"]
    assert await commands_of(db, tenant_id) == []


# Provider keys --------------------------------------------------------------------------------


async def pending_key(db, tenant_id: str, provider: str) -> str | None:
    """The plaintext of the tenant's pending key, opened as the supervisor would."""
    row = await db.fetchrow(
        "SELECT sealed FROM pending_provider_keys WHERE tenant_id = $1 AND provider = $2",
        tenant_id,
        provider,
    )
    if row is None:
        return None
    return open_sealed(SEAL_PRIVATE_KEY, row["sealed"], tenant_id=tenant_id, provider=provider)


async def test_keys_are_added_masked_replaced_with_confirmation_and_removed(
    db, browser_for
) -> None:
    tenant_id, token = await add_tenant(db)
    browser = await browser_for(token)
    first, second = "sk-" + uuid.uuid4().hex + "AB12", "sk-" + uuid.uuid4().hex + "CD34"
    with capture_logs() as logs:
        page = await browser.get("/console/tenant/keys")
        assert 'type="password"' in page and 'autocomplete="off"' in page
        status, _, headers = await browser.post(
            "/console/tenant/keys", {"provider": "binance", "key": first}
        )
        assert status == 303 and headers["Location"] == "/console/tenant/keys"
        assert await pending_key(db, tenant_id, "binance") == first
        outbox = await db.fetchval(
            "SELECT count(*) FROM outbox WHERE actor = 'accept_key' AND args->>0 = $1", tenant_id
        )
        assert outbox == 1
        page = await browser.get("/console/tenant/keys")
        assert "****AB12" in page and first not in page

        # Adding over an existing key is refused until the replace page's box is ticked.
        status, page, _ = await browser.post(
            "/console/tenant/keys", {"provider": "binance", "key": second}
        )
        assert status == 409 and second not in page
        assert await pending_key(db, tenant_id, "binance") == first
        replace = await browser.get("/console/tenant/keys/binance/replace")
        assert "****AB12" in replace and 'name="confirmed"' in replace and first not in replace
        status, _, _ = await browser.post(
            "/console/tenant/keys", {"provider": "binance", "key": second, "confirmed": "yes"}
        )
        assert status == 303
        assert await pending_key(db, tenant_id, "binance") == second

        # A bad key comes back with its field empty and nothing stored.
        status, page, _ = await browser.post(
            "/console/tenant/keys", {"provider": "Bad Name", "key": "short"}
        )
        assert status == 422 and 'id="provider-errors"' in page and 'id="key-errors"' in page
        assert 'value="short"' not in page

        # Removing asks first; the confirmed removal deletes the stored key too.
        await db.execute(
            "INSERT INTO provider_keys (tenant_id, provider, ciphertext, last4, key_version) "
            "VALUES ($1, 'bitso', 'x', '****WXYZ', 'v1')",
            tenant_id,
        )
        status, page, _ = await browser.post("/console/tenant/keys/bitso/remove")
        assert status == 200 and 'name="confirmed" value="yes"' in page
        assert (
            await db.fetchval("SELECT count(*) FROM provider_keys WHERE tenant_id = $1", tenant_id)
            == 1
        )
        status, _, headers = await browser.post(
            "/console/tenant/keys/bitso/remove", {"confirmed": "yes"}
        )
        assert status == 303
        assert (
            await db.fetchval("SELECT count(*) FROM provider_keys WHERE tenant_id = $1", tenant_id)
            == 0
        )
        status, _, _ = await browser.post("/console/tenant/keys/bitso/remove", {"confirmed": "yes"})
        assert status == 404
    audited = await db.fetchrow(
        "SELECT actor, cause, action FROM audit_events WHERE subject_kind = 'provider_key' "
        "AND subject_id = $1 AND action = 'provider_key.removed'",
        f"{tenant_id}/bitso",
    )
    assert audited is not None
    assert (audited["actor"], audited["cause"]) == (f"tenant:{tenant_id}", "console")
    text = logs.text()
    assert '"provider key stored"' in text and '"provider key deleted"' in text
    assert first not in text and second not in text, "a key reached the logs"


# Logs -----------------------------------------------------------------------------------------


async def test_logs_page_renders_the_tail_and_the_stream_follows_it(db, browser_for) -> None:
    tenant_id, token = await add_tenant(db)
    await bot_logs.append(
        db, tenant_id, 1, [(datetime.now(UTC), f"line {n}") for n in range(1, 151)]
    )
    await store.set_desired(db, tenant_id, "running", reset_restarts=True)
    browser = await browser_for(token)
    page = await browser.get("/console/tenant/logs")
    assert "<li>line 150</li>" in page and "<li>line 51</li>" in page
    assert "<li>line 50</li>" not in page  # the newest 100
    assert 'data-live-logs-stream="/console/tenant/logs/stream?after=150"' in page
    assert 'role="log"' in page and 'aria-live="polite"' in page
    assert "live-logs.js" in page and 'href="/console/tenant/logs"' in page  # the refresh link

    async with browser.session.get(
        browser.base + "/console/tenant/logs/stream?after=148"
    ) as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        await bot_logs.append(db, tenant_id, 151, [(datetime.now(UTC), "fresh line")])
        seen: list[bytes] = []
        while b"data: fresh line\n" not in seen:
            seen.append(await asyncio.wait_for(stream.content.readline(), 10))
        data = [line for line in seen if line.startswith(b"data: ")]
        assert data == [b"data: line 149\n", b"data: line 150\n", b"data: fresh line\n"]
        await store.set_desired(db, tenant_id, "stopped", reset_restarts=False)
        await db.execute("UPDATE bots SET observed = 'stopped' WHERE tenant_id = $1", tenant_id)
        while b"event: end\n" not in seen:
            seen.append(await asyncio.wait_for(stream.content.readline(), 10))


async def test_log_streams_are_bounded_per_tenant(db, console_settings, make_client) -> None:
    tenant_id, token = await add_tenant(db)
    _, other_token = await add_tenant(db)
    await store.set_desired(db, tenant_id, "running", reset_restarts=True)
    client = await make_client(
        console_settings.model_copy(update={"bot_sse_max_streams_per_tenant": 2})
    )
    browser, other = TenantBrowser(client), TenantBrowser(client)
    try:
        await browser.sign_in(token)
        await other.sign_in(other_token)
        url = browser.base + "/console/tenant/logs/stream"
        streams = [await browser.session.get(url) for _ in range(2)]
        assert [s.status for s in streams] == [200, 200]
        refused, _, headers = await browser.request("GET", "/console/tenant/logs/stream")
        assert refused == 429 and headers.get("Retry-After") == "1"
        async with other.session.get(url) as theirs:  # another tenant is not held up
            assert theirs.status == 200
        streams[0].close()

        async def slot_back() -> bool:
            response = await browser.session.get(url)
            response.close()
            return response.status == 200

        await wait_for(slot_back, timeout=10)
        for stream in streams[1:]:
            stream.close()
    finally:
        await browser.close()
        await other.close()


# CSRF and audience ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/console/tenant/bot/start", {}),
        ("/console/tenant/config", {"symbols": "ETHUSDT", "mode": "paper", "capital": "5"}),
        ("/console/tenant/keys", {"provider": "binance", "key": "sk-0123456789abcdef"}),
        ("/console/tenant/keys/binance/remove", {"confirmed": "yes"}),
    ],
)
async def test_a_form_without_the_csrf_token_is_refused(db, browser_for, path, data) -> None:
    tenant_id, token = await add_tenant(db)
    await db.execute(
        "INSERT INTO provider_keys (tenant_id, provider, ciphertext, last4, key_version) "
        "VALUES ($1, 'binance', 'x', '****0000', 'v1')",
        tenant_id,
    )
    browser = await browser_for(token)
    status, _, _ = await browser.request("POST", path, data, csrf=False)
    assert status == 403
    status, _, _ = await browser.request(
        "POST", path, {**data, "csrf_token": "forged" * 8}, csrf=False
    )
    assert status == 403
    bot = await store.get_bot(db, tenant_id)
    assert bot is not None and bot.desired == "stopped" and bot.config_version == 1
    assert await commands_of(db, tenant_id) == []
    assert (
        await db.fetchval(
            "SELECT count(*) FROM pending_provider_keys WHERE tenant_id = $1", tenant_id
        )
        == 0
    )
    assert (
        await db.fetchval("SELECT count(*) FROM provider_keys WHERE tenant_id = $1", tenant_id) == 1
    )


async def test_without_a_session_tenant_pages_send_to_login(console_settings, make_client) -> None:
    client = await make_client(console_settings)
    for path in ("/console/tenant/", "/console/tenant/config", "/console/tenant/logs/stream"):
        response = await client.get(path, allow_redirects=False)
        assert response.status == 303
        assert response.headers["Location"].startswith("/console/login?next=")


# Notifications --------------------------------------------------------------------------------


async def add_deliveries(db, tenant_id: str, url: str, count: int) -> None:
    """A webhook endpoint and `count` bot events, each with its delivery."""
    await notifications.put_endpoint(db, tenant_id, "webhook", url, sealed_secret="sealed")
    async with db.transaction():
        await notifications.record_events(
            db, tenant_id, [("bot.started", {"n": n}) for n in range(count)]
        )


async def test_notifications_list_endpoints_and_deliveries_a_page_at_a_time(
    db, browser_for
) -> None:
    tenant_id, token = await add_tenant(db)
    await add_deliveries(db, tenant_id, "https://hooks.example.com/mine", 53)
    browser = await browser_for(token)
    first = await browser.get("/console/tenant/notifications")
    assert "https://hooks.example.com/mine" in first
    assert first.count('<th scope="row">bot.started</th>') == 50
    found = re.search(r'href="([^"]*cursor=[^"]+)" rel="next"', first)
    assert found is not None
    second = await browser.get(found.group(1).replace("&amp;", "&"))
    assert second.count('<th scope="row">bot.started</th>') == 3
    assert 'rel="next"' not in second
    status, _, _ = await browser.request("GET", "/console/tenant/notifications?cursor=nonsense")
    assert status == 400


async def test_tenant_pages_speak_spanish_by_default(db, console_settings, make_client) -> None:
    _, token = await add_tenant(db)
    client = await make_client(console_settings)
    browser = TenantBrowser(client, language="es")
    try:
        await browser.sign_in(token)
        home = await browser.get("/console/tenant/")
        assert "Tu bot" in home and ">Iniciar<" in home and "Your bot" not in home
        config = await browser.get("/console/tenant/config")
        assert "Guardar la configuración" in config
        status, _, _ = await browser.post("/console/tenant/bot/start")
        assert status == 303
        assert "Inicio pedido" in await browser.get("/console/tenant/")
        logs = await browser.get("/console/tenant/logs")
        assert "Aún no hay líneas de registro." in logs
    finally:
        await browser.close()
