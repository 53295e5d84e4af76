"""Signing in to the console: admin accounts, the admin token where none exists, tenant
tokens and accounts; failures alike whatever was wrong, throttled by the failed-authentication
budget the API shares, and audited; `next` only ever a console page."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from colmena.dev import DEV_ADMIN_TOKEN_FILE, with_dev_admin_token
from colmena.http.console.login import safe_next
from colmena.store import accounts as accounts_store
from tests.bots_support import add_tenant
from tests.console_support import (
    ADMIN_TOKEN,
    PASSWORD,
    add_admin,
    console,
    console_settings,
    password_hash,
    sign_in,
    sign_in_admin_token,
)

REDIS_URL = "redis://127.0.0.1:6379/0"


async def audit_rows(db: asyncpg.Connection) -> list[dict]:
    rows = await db.fetch(
        "SELECT actor, action, subject_kind, subject_id, after::text AS after, cause "
        "FROM audit_events WHERE action LIKE 'console.%' ORDER BY id"
    )
    return [{**dict(row), "after": json.loads(row["after"])} for row in rows]


async def session_kinds(db: asyncpg.Connection) -> list[tuple]:
    rows = await db.fetch(
        "SELECT kind, admin_name, tenant_id, account_id FROM console_sessions ORDER BY created_at"
    )
    return [tuple(row) for row in rows]


async def test_with_no_admin_account_the_admin_form_takes_the_admin_token(settings, db) -> None:
    async with console(console_settings(settings)) as client:
        page = await (await client.get("/console/login")).text()
        assert 'name="admin_token"' in page and 'name="username"' not in page
        response = await sign_in_admin_token(client)
        assert response.headers["Location"] == "/console/admin/"
    assert await session_kinds(db) == [("admin", None, None, None)]
    [row] = await audit_rows(db)
    assert row["actor"] == "admin:token" and row["action"] == "console.login"
    assert row["after"] == {"method": "admin_token", "client": "127.0.0.1"}
    assert row["cause"] == "console"


async def test_a_wrong_admin_token_is_refused_and_audited_without_the_token(settings, db) -> None:
    async with console(console_settings(settings)) as client:
        response = await sign_in(client, kind="admin", admin_token="not-the-token-" + "x" * 30)
        assert response.status == 401
        assert "No se pudo entrar" in await response.text()
    assert await session_kinds(db) == []
    [row] = await audit_rows(db)
    assert (row["actor"], row["action"], row["subject_id"]) == (
        "anonymous",
        "console.login_failed",
        "token",
    )
    assert "not-the-token" not in json.dumps(row)


async def test_without_a_configured_token_or_admin_there_is_no_operator_way_in(
    settings, db
) -> None:
    async with console(console_settings(settings, bot_admin_token=None)) as client:
        page = await (await client.get("/console/login")).text()
        assert "colmena admins add" in page and 'name="admin_token"' not in page
        response = await sign_in(client, kind="admin", admin_token="")
        assert response.status == 401


async def test_once_an_admin_exists_only_names_and_passwords_sign_operators_in(
    settings, db
) -> None:
    await add_admin(db, "ana")
    async with console(console_settings(settings)) as client:
        page = await (await client.get("/console/login")).text()
        assert 'name="username"' in page and 'name="admin_token"' not in page
        refused = await sign_in(client, kind="admin", admin_token=ADMIN_TOKEN)
        assert refused.status == 401
        wrong = await sign_in(client, kind="admin", username="ana", password="wrong password!")
        unknown = await sign_in(client, kind="admin", username="bob", password=PASSWORD)
        assert wrong.status == unknown.status == 401
        right = await sign_in(
            client, kind="admin", username="Ana", password=PASSWORD, next="/console/admin/x"
        )
        assert right.status == 303 and right.headers["Location"] == "/console/admin/x"
    assert await session_kinds(db) == [("admin", "ana", None, None)]
    rows = await audit_rows(db)
    assert [(r["action"], r["subject_id"]) for r in rows] == [
        ("console.login_failed", "unknown"),  # the token is no way in any more
        ("console.login_failed", "ana"),
        ("console.login_failed", "unknown"),  # never the name someone typed
        ("console.login", "ana"),
    ]
    assert rows[-1]["actor"] == "admin:ana"


async def test_a_disabled_admin_cannot_sign_in(settings, db) -> None:
    await add_admin(db, "ana")
    await add_admin(db, "eva")
    await db.execute("UPDATE console_admins SET disabled_at = now() WHERE name = 'ana'")
    async with console(console_settings(settings)) as client:
        response = await sign_in(client, kind="admin", username="ana", password=PASSWORD)
        assert response.status == 401
    assert await session_kinds(db) == []


async def test_a_tenant_signs_in_with_their_token(settings, db) -> None:
    tenant_id, token = await add_tenant(db)
    async with console(console_settings(settings)) as client:
        wrong = await sign_in(client, kind="tenant", token="cmt_" + "x" * 43)
        assert wrong.status == 401
        right = await sign_in(client, kind="tenant", token=token)
        assert right.status == 303 and right.headers["Location"] == "/console/tenant/"
    assert await session_kinds(db) == [("tenant", None, tenant_id, None)]
    rows = await audit_rows(db)
    assert [(r["actor"], r["action"]) for r in rows] == [
        ("anonymous", "console.login_failed"),
        (f"tenant:{tenant_id}", "console.login"),
    ]
    assert token not in json.dumps(rows)


async def test_an_account_signs_in_for_its_tenant(settings, db) -> None:
    tenant_id, _ = await add_tenant(db)
    account = await accounts_store.create_account(db, "Ana@Example.com", password_hash())
    assert account is not None
    await accounts_store.mark_verified(db, account.id, tenant_id)
    async with console(console_settings(settings)) as client:
        page = await (await client.get("/console/login")).text()
        assert 'name="email"' in page
        wrong = await sign_in(client, kind="account", email="ana@example.com", password="nope")
        assert wrong.status == 401
        right = await sign_in(client, kind="account", email="ana@example.com", password=PASSWORD)
        assert right.status == 303
    assert await session_kinds(db) == [("tenant", None, tenant_id, account.id)]
    rows = await audit_rows(db)
    assert [(r["action"], r["subject_kind"], r["subject_id"]) for r in rows] == [
        ("console.login_failed", "account", str(account.id)),
        ("console.login", "tenant", tenant_id),
    ]
    assert rows[-1]["after"]["method"] == "account"


async def test_an_unverified_account_has_no_tenant_and_cannot_sign_in(settings, db) -> None:
    await accounts_store.create_account(db, "eva@example.com", password_hash())
    async with console(console_settings(settings)) as client:
        response = await sign_in(client, kind="account", email="eva@example.com", password=PASSWORD)
        assert response.status == 401


async def test_logout_is_audited(settings, db) -> None:
    async with console(console_settings(settings)) as client:
        await sign_in_admin_token(client)
        page = await (await client.get("/console/login")).text()
        token = page.split('name="csrf_token" value="')[1].split('"')[0]
        await client.post("/console/logout", data={"csrf_token": token}, allow_redirects=False)
    assert [(r["actor"], r["action"]) for r in await audit_rows(db)] == [
        ("admin:token", "console.login"),
        ("admin:token", "console.logout"),
    ]


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_failed_logins_spend_the_budget_the_api_shares(settings, db, redis_prefix) -> None:
    throttled = console_settings(
        settings,
        redis_url=SecretStr(REDIS_URL),
        redis_prefix=redis_prefix,
        rate_limit_failed_auth="3/10min burst 3",
    )
    async with console(throttled) as client:
        for _ in range(3):
            response = await sign_in(client, kind="tenant", token="cmt_" + "y" * 43)
            assert response.status == 401
        # Locked out: the console and the API alike, until the budget refills.
        # The console says so with its own page (the refusal comes from the ingress's limiter,
        # before the console's handlers), the API with its JSON.
        locked = await client.get("/console/login", headers={"Accept-Language": "es"})
        assert locked.status == 429 and "Retry-After" in locked.headers
        assert locked.content_type == "text/html"
        page = await locked.text()
        assert "Demasiados intentos" in page and "<html" in page
        assert "script-src 'self'" in locked.headers["Content-Security-Policy"]
        api = await client.get("/api/v1/bot", headers={"Authorization": "Bearer cmt_z"})
        assert api.status == 429 and api.content_type == "application/json"
    assert await session_kinds(db) == []
    assert len(await audit_rows(db)) == 3


@pytest.mark.parametrize(
    ("asked", "kind", "expected"),
    [
        ("/console/admin/payments?q=a", "admin", "/console/admin/payments?q=a"),
        ("/console/tenant/", "tenant", "/console/tenant/"),
        (None, "admin", "/console/admin/"),
        ("", "tenant", "/console/tenant/"),
        ("https://evil.example/console/", "admin", "/console/admin/"),
        ("//evil.example/console/", "admin", "/console/admin/"),
        ("/\\evil.example", "admin", "/console/admin/"),
        ("/consolex/", "admin", "/console/admin/"),
        ("javascript:alert(1)", "tenant", "/console/tenant/"),
        ("/console/login?next=/console/admin/", "admin", "/console/admin/"),
    ],
)
def test_next_leads_only_to_a_console_page(asked, kind, expected) -> None:
    assert safe_next(asked, kind) == expected


async def test_an_offsite_next_is_not_followed_after_login(settings) -> None:
    async with console(console_settings(settings)) as client:
        response = await sign_in(
            client, kind="admin", admin_token=ADMIN_TOKEN, next="https://evil.example/"
        )
        assert response.headers["Location"] == "/console/admin/"


async def test_an_unknown_way_to_sign_in_is_a_400_page(settings) -> None:
    async with console(console_settings(settings)) as client:
        response = await sign_in(client, kind="root")
        assert response.status == 400 and response.content_type == "text/html"


def test_dev_makes_an_admin_token_once_and_keeps_a_configured_one(settings) -> None:
    dev = settings.model_copy(update={"bot_admin_token": None})
    first = with_dev_admin_token(dev)
    again = with_dev_admin_token(dev)
    assert first.bot_admin_token is not None and again.bot_admin_token is not None
    token = first.bot_admin_token.get_secret_value()
    assert len(token) >= 32 and again.bot_admin_token.get_secret_value() == token
    assert (settings.data_dir / DEV_ADMIN_TOKEN_FILE).read_text() == token
    own = dev.model_copy(update={"bot_admin_token": SecretStr("z" * 40)})
    assert with_dev_admin_token(own).bot_admin_token == own.bot_admin_token


async def test_console_pages_spend_their_own_budget_and_static_files_none(settings) -> None:
    """Three pages fit the budget; the fourth is the console's 429 page. The stylesheet, asked
    for more often than that, never costs anything, and the API's budget is untouched."""
    limited = console_settings(settings, rate_limit_console="3/h burst 3")
    async with console(limited) as client:
        for _ in range(3):
            assert (await client.get("/console/login")).status == 200
        for _ in range(6):
            assert (await client.get("/console/static/console.css")).status == 200
        refused = await client.get("/console/login")
        assert refused.status == 429 and refused.content_type == "text/html"
        assert "Retry-After" in refused.headers
        assert (await client.get("/api/v1/openapi.json")).status == 200
