"""What the console tests share: settings with an admin token and a cheap argon2id cost, a
console client with a clock of the test's own, and signing in through the real login forms."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from colmena.config import Settings
from colmena.domain.accounts import HashCost, hasher
from colmena.http.app import create_app
from colmena.http.console.core import CLOCK, Clock
from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.resources import Resources
from colmena.store.admins import create_admin
from tests.accounts_support import COST

ADMIN_TOKEN = "console-test-admin-token-0123456789abcdef"
PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class FakeClock(Clock):
    """Time that moves only when the test says."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


def console_settings(settings: Settings, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"bot_admin_token": SecretStr(ADMIN_TOKEN), **COST, **overrides}
    return settings.model_copy(update=values)


@contextlib.asynccontextmanager
async def console(settings: Settings, *, clock: Clock | None = None) -> AsyncIterator[TestClient]:
    """The real ingress, console mounted, served on 127.0.0.1, with the test's clock if given:
    `async with console(console_settings(settings), clock=clock) as client: ...`."""
    resources = Resources(
        settings,
        database_url=settings.require_database_url(),
        publisher=AmqpPublisher(
            settings.require_broker_url(), settings.queue_prefix, connect_timeout=2
        ),
    )
    app = create_app(settings, resources)
    if clock is not None:
        app[CLOCK] = clock
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


def csrf_in(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, html
    return found.group(1)


async def page_token(client: TestClient, path: str = "/console/login") -> str:
    """The CSRF token of a page's forms (the pre-session one on the login page)."""
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return csrf_in(await response.text())


async def sign_in(
    client: TestClient, headers: dict[str, str] | None = None, **fields: str
) -> aiohttp.ClientResponse:
    """POST the login form with `fields` (kind=..., and the credentials) and its CSRF token."""
    token = await page_token(client)
    return await client.post(
        "/console/login",
        data={"csrf_token": token, **fields},
        headers=headers,
        allow_redirects=False,
    )


async def sign_in_admin_token(client: TestClient) -> aiohttp.ClientResponse:
    response = await sign_in(client, kind="admin", admin_token=ADMIN_TOKEN)
    assert response.status == 303, await response.text()
    return response


async def sign_in_admin(client: TestClient, name: str, password: str = PASSWORD) -> None:
    response = await sign_in(client, kind="admin", username=name, password=password)
    assert response.status == 303, await response.text()


async def sign_in_tenant(client: TestClient, token: str) -> None:
    response = await sign_in(client, kind="tenant", token=token)
    assert response.status == 303, await response.text()


def password_hash(password: str = PASSWORD) -> str:
    cost = HashCost(
        COST["accounts_argon2_time_cost"],
        COST["accounts_argon2_memory_kib"],
        COST["accounts_argon2_parallelism"],
    )
    return hasher(cost).hash(password)


async def add_admin(conn: asyncpg.Connection, name: str, password: str = PASSWORD) -> None:
    assert await create_admin(conn, name=name, password_hash=password_hash(password))


def session_cookie(client: TestClient) -> str | None:
    for cookie in client.session.cookie_jar:
        if cookie.key == "colmena_console":
            return cookie.value
    return None


def plant_session_cookie(client: TestClient, value: str) -> None:
    """Put a session cookie in the browser as the console would have set it (path /console)."""
    cookie: SimpleCookie = SimpleCookie()
    cookie["colmena_console"] = value
    cookie["colmena_console"]["path"] = "/console"
    client.session.cookie_jar.update_cookies(cookie, client.make_url("/console/"))
