"""Console sessions on the real ingress and PostgreSQL: cookie flags, where sessions live,
idle and absolute timeouts on an injected clock, the once-a-minute visit write, fixation,
logout, and credentials that stop holding (a disabled admin, a rotated tenant token)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from colmena.domain.console_sessions import (
    TOUCH_INTERVAL_S,
    SessionTimes,
    needs_touch,
    opened_at,
    session_state,
)
from colmena.domain.tenants import new_token, token_digest
from colmena.store import admins as admins_store
from colmena.store import tenants as tenants_store
from tests.bots_support import add_tenant
from tests.console_support import (
    ADMIN_TOKEN as ADMIN,
)
from tests.console_support import (
    FakeClock,
    add_admin,
    console,
    console_settings,
    page_token,
    plant_session_cookie,
    session_cookie,
    sign_in,
    sign_in_admin,
    sign_in_admin_token,
    sign_in_tenant,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def set_cookies(response) -> dict[str, SimpleCookie]:
    found = {}
    for header in response.headers.getall("Set-Cookie", []):
        cookie = SimpleCookie()
        cookie.load(header)
        for name in cookie:
            found[name] = cookie
    return found


async def landing(client: TestClient) -> str:
    """Where /console/ sends this browser: its home when signed in, else the login page."""
    response = await client.get("/console/", allow_redirects=False)
    assert response.status == 303
    return response.headers["Location"]


async def session_rows(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM console_sessions ORDER BY created_at")


# The rules alone --------------------------------------------------------------------------------


def test_a_session_is_live_until_idle_or_past_its_absolute_limit() -> None:
    times = opened_at(T0, absolute_s=3600)
    assert session_state(times, T0 + timedelta(minutes=29), idle_s=1800) == "live"
    assert session_state(times, T0 + timedelta(minutes=30), idle_s=1800) == "idle"
    seen = SessionTimes(T0, T0 + timedelta(minutes=50), times.expires_at)
    assert session_state(seen, T0 + timedelta(minutes=59), idle_s=1800) == "live"
    assert session_state(seen, T0 + timedelta(minutes=60), idle_s=1800) == "expired"


def test_a_visit_is_written_at_most_once_a_minute() -> None:
    times = opened_at(T0, absolute_s=3600)
    assert not needs_touch(times, T0 + timedelta(seconds=TOUCH_INTERVAL_S - 1))
    assert needs_touch(times, T0 + timedelta(seconds=TOUCH_INTERVAL_S))


# Cookies ----------------------------------------------------------------------------------------


async def test_the_session_cookie_is_httponly_strict_and_not_secure_over_plain_http(
    settings, db
) -> None:
    async with console(console_settings(settings)) as client:
        response = await sign_in_admin_token(client)
        cookie = set_cookies(response)["colmena_console"]["colmena_console"]
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "Strict"
        assert cookie["path"] == "/console"
        assert not cookie["secure"]
        assert not cookie["max-age"]  # a browser session cookie; the server's timeouts rule
        # The database keys the session by the cookie's SHA-256 and never holds the value.
        rows = await session_rows(db)
        assert [bytes(row["id"]) for row in rows] == [
            hashlib.sha256(cookie.value.encode()).digest()
        ]
        assert cookie.value not in repr([dict(row) for row in rows])


async def test_cookies_are_secure_when_a_trusted_proxy_says_https(settings) -> None:
    https = {"X-Forwarded-Proto": "https"}
    behind_proxy = console_settings(settings, trusted_proxies="127.0.0.1")
    async with console(behind_proxy) as client:
        response = await sign_in(client, headers=https, kind="admin", admin_token=ADMIN)
        assert response.status == 303
        assert set_cookies(response)["colmena_console"]["colmena_console"]["secure"] is True
    # The same header from a peer that is not a trusted proxy is the client's say-so: ignored.
    async with console(console_settings(settings)) as client:
        response = await sign_in(client, headers=https, kind="admin", admin_token=ADMIN)
        assert response.status == 303
        assert not set_cookies(response)["colmena_console"]["colmena_console"]["secure"]


# Timeouts ---------------------------------------------------------------------------------------


async def test_an_idle_session_ends_and_a_used_one_lives_on(settings, db) -> None:
    clock = FakeClock(T0)
    async with console(console_settings(settings, console_idle_minutes=30), clock=clock) as client:
        await sign_in_admin_token(client)
        clock.advance(minutes=29)
        assert await landing(client) == "/console/admin/"
        clock.advance(minutes=29)  # 58 minutes after login, 29 after the last request
        assert await landing(client) == "/console/admin/"
        clock.advance(minutes=30)
        response = await client.get("/console/", allow_redirects=False)
        assert response.headers["Location"] == "/console/login"
        assert await session_rows(db) == []
        assert set_cookies(response)["colmena_console"]["colmena_console"]["max-age"] == "0"


async def test_a_busy_session_still_ends_at_its_absolute_limit(settings, db) -> None:
    clock = FakeClock(T0)
    short = console_settings(settings, console_idle_minutes=30, console_absolute_hours=1)
    async with console(short, clock=clock) as client:
        await sign_in_admin_token(client)
        for _ in range(2):
            clock.advance(minutes=25)
            assert await landing(client) == "/console/admin/"
        clock.advance(minutes=10)  # 60 minutes after login, 10 after the last request
        assert await landing(client) == "/console/login"
        assert await session_rows(db) == []


async def test_the_last_visit_is_written_only_when_a_minute_old(settings, db) -> None:
    clock = FakeClock(T0)
    async with console(console_settings(settings), clock=clock) as client:
        await sign_in_admin_token(client)
        clock.advance(seconds=30)
        await landing(client)
        assert (await session_rows(db))[0]["last_seen_at"] == T0
        clock.advance(seconds=31)
        await landing(client)
        assert (await session_rows(db))[0]["last_seen_at"] == T0 + timedelta(seconds=61)


# Fixation and logout ----------------------------------------------------------------------------


async def test_login_always_makes_a_new_session_and_ends_the_one_the_browser_had(
    settings, db
) -> None:
    async with console(console_settings(settings)) as client:
        # A value planted before login (session fixation) is never adopted.
        plant_session_cookie(client, "planted-by-someone")
        await sign_in_admin_token(client)
        first = session_cookie(client)
        assert first not in (None, "planted-by-someone")
        await sign_in_admin_token(client)
        second = session_cookie(client)
        assert second != first
        rows = await session_rows(db)
        assert [bytes(row["id"]) for row in rows] == [hashlib.sha256(second.encode()).digest()]


async def test_logout_deletes_the_session_and_its_cookie_stops_working(settings, db) -> None:
    async with console(console_settings(settings)) as client:
        await sign_in_admin_token(client)
        secret = session_cookie(client)
        token = await page_token(client, "/console/login")
        response = await client.post(
            "/console/logout", data={"csrf_token": token}, allow_redirects=False
        )
        assert response.status == 303
        assert response.headers["Location"] == "/console/login"
        assert await session_rows(db) == []
        assert session_cookie(client) is None
        # Replaying the old cookie opens nothing.
        plant_session_cookie(client, secret)
        assert await landing(client) == "/console/login"
        notice = await client.get("/console/login")
        assert "Has salido de la consola." in await notice.text()


async def test_logout_without_a_session_goes_to_the_login_page(settings) -> None:
    async with console(console_settings(settings)) as client:
        response = await client.post("/console/logout", allow_redirects=False)
        assert response.status == 303
        assert response.headers["Location"].startswith("/console/login")


# Who may see what -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/console/admin/", "/console/admin/payments?q=1", "/console/tenant/"]
)
async def test_pages_behind_a_session_send_a_stranger_to_login_and_back(settings, path) -> None:
    async with console(console_settings(settings)) as client:
        response = await client.get(path, allow_redirects=False)
        assert response.status == 303
        login = client.make_url(response.headers["Location"])
        assert login.path == "/console/login"
        assert login.query["next"] == path


async def test_each_kind_of_session_reaches_only_its_own_pages(settings, db) -> None:
    tenant_id, token = await add_tenant(db)
    async with console(console_settings(settings)) as client:
        await sign_in_tenant(client, token)
        assert await landing(client) == "/console/tenant/"
        response = await client.get("/console/admin/", allow_redirects=False)
        assert response.status == 303 and response.headers["Location"].startswith("/console/login")
    async with console(console_settings(settings)) as client:
        await sign_in_admin_token(client)
        response = await client.get("/console/tenant/", allow_redirects=False)
        assert response.status == 303 and response.headers["Location"].startswith("/console/login")


async def test_disabling_an_admin_ends_their_sessions(settings, db) -> None:
    await add_admin(db, "ana")
    async with console(console_settings(settings)) as client:
        await sign_in_admin(client, "ana")
        assert await landing(client) == "/console/admin/"
        assert await admins_store.disable_admin(db, "ana")
        assert await landing(client) == "/console/login"


async def test_a_disabled_admin_whose_session_row_survived_is_still_refused(settings, db) -> None:
    await add_admin(db, "ana")
    async with console(console_settings(settings)) as client:
        await sign_in_admin(client, "ana")
        await db.execute("UPDATE console_admins SET disabled_at = now() WHERE name = 'ana'")
        assert await landing(client) == "/console/login"
        assert await session_rows(db) == []


async def test_rotating_a_tenant_token_ends_the_sessions_it_opened(settings, db) -> None:
    tenant_id, token = await add_tenant(db)
    async with console(console_settings(settings)) as client:
        await sign_in_tenant(client, token)
        assert await landing(client) == "/console/tenant/"
        await tenants_store.set_token(db, tenant_id, token_digest(new_token()))
        assert await landing(client) == "/console/login"


async def test_admin_token_sessions_end_once_an_admin_account_exists(settings, db) -> None:
    async with console(console_settings(settings)) as client:
        await sign_in_admin_token(client)
        assert await landing(client) == "/console/admin/"
        await add_admin(db, "ana")
        assert await landing(client) == "/console/login"
