"""CSRF on the console: every request that is not a GET or HEAD carries the session's token
(or, before any session, the pre-session cookie's); a missing or wrong one is a 403 page, a
security log line and a count, and nothing happens."""

from __future__ import annotations

import json

import asyncpg
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from tests.console_support import (
    ADMIN_TOKEN,
    console,
    console_settings,
    page_token,
    sign_in_admin_token,
)
from tests.fuzz_support import capture_logs


def refusals() -> float:
    labels = {"reason": "console_csrf_invalid"}
    return REGISTRY.get_sample_value("colmena_security_events_total", labels) or 0.0


async def sessions(db: asyncpg.Connection) -> int:
    return await db.fetchval("SELECT count(*) FROM console_sessions")


async def assert_refused(client: TestClient, path: str, **kwargs) -> None:
    before = refusals()
    with capture_logs() as logs:
        response = await client.post(path, allow_redirects=False, **kwargs)
    assert response.status == 403
    assert response.content_type == "text/html"
    assert "Este formulario caducó" in await response.text()
    assert refusals() == before + 1
    lines = [json.loads(line) for line in logs.text().splitlines() if line.startswith("{")]
    assert any(
        line["event"].startswith("security: console request without a valid CSRF token")
        and line["path"] == path
        for line in lines
    ), logs.text()


async def test_a_login_without_the_forms_token_is_refused_and_opens_nothing(settings, db) -> None:
    credentials = {"kind": "admin", "admin_token": ADMIN_TOKEN}
    async with console(console_settings(settings)) as client:
        await assert_refused(client, "/console/login", data=credentials)
        token = await page_token(client)
        await assert_refused(client, "/console/login", data={**credentials, "csrf_token": "x" * 43})
        # The right token from another browser (its pre-session cookie is not this one's).
        client.session.cookie_jar.clear()
        await assert_refused(client, "/console/login", data={**credentials, "csrf_token": token})
        assert await sessions(db) == 0


async def test_a_signed_in_browser_posts_only_with_its_sessions_token(settings, db) -> None:
    async with console(console_settings(settings)) as client:
        login_token = await page_token(client)
        await sign_in_admin_token(client)
        # The pre-session token no longer counts once a session exists.
        await assert_refused(client, "/console/logout", data={"csrf_token": login_token})
        await assert_refused(client, "/console/logout")
        assert await sessions(db) == 1
        session_token = await page_token(client, "/console/login")
        assert session_token != login_token
        response = await client.post(
            "/console/logout", data={"csrf_token": session_token}, allow_redirects=False
        )
        assert response.status == 303
        assert await sessions(db) == 0


async def test_one_sessions_token_does_not_open_another_session(settings, db) -> None:
    async with (
        console(console_settings(settings)) as first,
        console(console_settings(settings)) as second,
    ):
        await sign_in_admin_token(first)
        await sign_in_admin_token(second)
        first_token = await page_token(first, "/console/login")
        await assert_refused(second, "/console/logout", data={"csrf_token": first_token})
        assert await sessions(db) == 2


async def test_a_script_may_send_the_token_in_a_header(settings, db) -> None:
    async with console(console_settings(settings)) as client:
        await sign_in_admin_token(client)
        token = await page_token(client, "/console/login")
        await assert_refused(client, "/console/logout", headers={"X-CSRF-Token": "wrong"})
        response = await client.post(
            "/console/logout", headers={"X-CSRF-Token": token}, allow_redirects=False
        )
        assert response.status == 303
        assert await sessions(db) == 0


async def test_the_language_switch_is_a_checked_form_too(settings) -> None:
    async with console(console_settings(settings)) as client:
        await assert_refused(client, "/console/language", data={"lang": "en"})
        assert "lang" not in {cookie.key for cookie in client.session.cookie_jar}


async def test_reading_pages_needs_no_token(settings) -> None:
    async with console(console_settings(settings)) as client:
        for method in ("GET", "HEAD"):
            response = await client.request(method, "/console/login")
            assert response.status == 200
