"""Accounts never tell whether an email exists, and their rate limits hold per client address
and per email (across addresses, and across ingress processes through Redis)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from colmena.config import Settings
from tests.accounts_support import PASSWORD, accounts_settings, from_client, link_in, mails_to
from tests.standins.smtp import SmtpStandin

REDIS_URL = os.environ.get("COLMENA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
FORGED_LINK = "cml_" + "A" * 43
FORGED_REFRESH = "cmr_" + "A" * 43


@pytest.fixture
def smtp():
    with SmtpStandin() as server:
        yield server


def new_email() -> str:
    return f"bo-{uuid.uuid4().hex[:8]}@example.com"


def answer_of(status: int, body: bytes, headers) -> tuple:
    """What a client can compare between two answers: all but the per-request headers."""
    kept = sorted((k, v) for k, v in headers.items() if k.lower() not in ("date", "x-request-id"))
    return status, body, kept


async def test_sign_up_answers_alike_for_new_unverified_and_verified_emails(
    settings, smtp, make_client, db
) -> None:
    api = await make_client(accounts_settings(settings, smtp))
    unverified, verified, fresh = new_email(), new_email(), new_email()
    for email in (unverified, verified):
        await api.post("/api/v1/signup", json={"email": email, "password": PASSWORD})
    await smtp.wait_for_async(2)
    _, token = link_in(mails_to(smtp, verified)[0])
    assert (await api.get(f"/api/v1/verify/{token}")).status == 200
    stored = await db.fetchval("SELECT password_hash FROM accounts WHERE email = $1", verified)

    answers = []
    for email in (fresh, unverified, verified.upper()):
        response = await api.post(
            "/api/v1/signup", json={"email": email, "password": "another long password"}
        )
        answers.append(answer_of(response.status, await response.read(), response.headers))
    assert answers[0][0] == 202
    assert answers[0] == answers[1] == answers[2]
    await smtp.wait_for_async(5)
    assert [link_in(m)[0] for m in mails_to(smtp, fresh)] == ["verify"]
    assert [link_in(m)[0] for m in mails_to(smtp, unverified)] == ["verify", "verify"]
    # To the account's own address, as stored, whatever case the sign-up used.
    first, notice = mails_to(smtp, verified)
    assert link_in(first)[0] == "verify"
    assert "already has one" in notice.message.get_body(("plain",)).get_content()
    assert await db.fetchval("SELECT count(*) FROM accounts WHERE lower(email) = $1", verified) == 1
    # The verified account's password is not touched by someone else's sign-up.
    assert (
        await db.fetchval("SELECT password_hash FROM accounts WHERE email = $1", verified) == stored
    )


async def test_forgot_password_answers_alike_and_mails_only_an_account(
    settings, smtp, make_client
) -> None:
    api = await make_client(accounts_settings(settings, smtp))
    known, unknown = new_email(), new_email()
    await api.post("/api/v1/signup", json={"email": known, "password": PASSWORD})
    await smtp.wait_for_async(1)
    answers = []
    for email in (unknown, known):
        response = await api.post("/api/v1/password/forgot", json={"email": email})
        answers.append(answer_of(response.status, await response.read(), response.headers))
    assert answers[0][0] == 202 and answers[0] == answers[1]
    await smtp.wait_for_async(2)
    assert [link_in(m)[0] for m in mails_to(smtp, known)] == ["verify", "password/reset"]
    assert mails_to(smtp, unknown) == []


async def test_login_is_one_401_for_unknown_wrong_and_unverified(
    settings, smtp, make_client
) -> None:
    api = await make_client(accounts_settings(settings, smtp))
    unverified, verified = new_email(), new_email()
    for email in (unverified, verified):
        await api.post("/api/v1/signup", json={"email": email, "password": PASSWORD})
    await smtp.wait_for_async(2)
    _, token = link_in(mails_to(smtp, verified)[0])
    await api.get(f"/api/v1/verify/{token}")
    answers = []
    for email, password in (
        (new_email(), PASSWORD),
        (verified, "not the password at all"),
        (unverified, PASSWORD),
    ):
        response = await api.post("/api/v1/login", json={"email": email, "password": password})
        answers.append(answer_of(response.status, await response.read(), response.headers))
    assert answers[0][0] == 401
    assert answers[0] == answers[1] == answers[2]


async def test_sign_up_budget_per_email_holds_across_client_addresses(
    settings, smtp, make_client, db
) -> None:
    api = await make_client(
        accounts_settings(settings, smtp, accounts_rate_per_email="2/h burst 2")
    )
    email = new_email()
    statuses = []
    for client in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
        response = await api.post(
            "/api/v1/signup",
            json={"email": email, "password": PASSWORD},
            headers=from_client(client),
        )
        statuses.append(response.status)
    assert statuses == [202, 202, 429]
    assert int(response.headers["Retry-After"]) >= 1
    assert (await response.json())["error"]["code"] == "rate_limited"
    await smtp.wait_for_async(2)
    assert len(mails_to(smtp, email)) == 2
    other = await api.post("/api/v1/signup", json={"email": new_email(), "password": PASSWORD})
    assert other.status == 202


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/signup", lambda: {"email": new_email(), "password": PASSWORD}),
        ("/api/v1/login", lambda: {"email": new_email(), "password": PASSWORD}),
        ("/api/v1/password/forgot", lambda: {"email": new_email()}),
        ("/api/v1/password/reset", lambda: {"token": FORGED_LINK, "password": PASSWORD}),
        ("/api/v1/token/refresh", lambda: {"refresh_token": FORGED_REFRESH}),
    ],
)
async def test_each_action_has_a_budget_per_client_address(
    settings, smtp, make_client, path, body
) -> None:
    limited = accounts_settings(
        settings, smtp, accounts_rate_per_client="3/h burst 3", accounts_login_failures="off"
    )
    api = await make_client(limited)
    statuses = [
        (await api.post(path, json=body(), headers=from_client("198.51.100.7"))).status
        for _ in range(4)
    ]
    assert 429 not in statuses[:3] and statuses[3] == 429
    elsewhere = await api.post(path, json=body(), headers=from_client("198.51.100.8"))
    assert elsewhere.status != 429


async def test_failed_logins_lock_the_email_then_the_client(settings, smtp, make_client) -> None:
    api = await make_client(
        accounts_settings(settings, smtp, accounts_login_failures="3/h burst 3")
    )
    email = new_email()
    await api.post("/api/v1/signup", json={"email": email, "password": PASSWORD})
    await smtp.wait_for_async(1)
    _, token = link_in(mails_to(smtp, email)[0])
    await api.get(f"/api/v1/verify/{token}")
    for n in range(3):
        wrong = await api.post(
            "/api/v1/login",
            json={"email": email, "password": "a wrong guess " * 2},
            headers=from_client(f"192.0.2.{n + 1}"),
        )
        assert wrong.status == 401
    right = await api.post(
        "/api/v1/login",
        json={"email": email, "password": PASSWORD},
        headers=from_client("192.0.2.50"),
    )
    assert right.status == 429
    assert (await right.json())["error"]["code"] == "too_many_failures"
    # One client guessing at many emails runs out the same way.
    for _ in range(3):
        await api.post(
            "/api/v1/login",
            json={"email": new_email(), "password": PASSWORD},
            headers=from_client("192.0.2.99"),
        )
    locked = await api.post(
        "/api/v1/login",
        json={"email": new_email(), "password": PASSWORD},
        headers=from_client("192.0.2.99"),
    )
    assert locked.status == 429


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_two_ingress_processes_share_the_email_budget_through_redis(
    settings: Settings, smtp, make_client, redis_prefix
) -> None:
    shared = accounts_settings(
        settings,
        smtp,
        redis_url=SecretStr(REDIS_URL),
        redis_prefix=redis_prefix,
        accounts_rate_per_email="2/h burst 2",
    )
    first, second = await make_client(shared), await make_client(shared)
    email = new_email()
    statuses = [
        (await api.post("/api/v1/password/forgot", json={"email": email})).status
        for api in (first, second, first)
    ]
    assert statuses == [202, 202, 429]
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=redis_prefix + "*accounts:forgot*")]
    finally:
        await client.aclose()
    assert keys and all(email.encode() not in key for key in keys)
