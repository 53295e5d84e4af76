"""Self-service accounts end to end on the real ingress, PostgreSQL and an SMTP stand-in:
sign-up, the emailed link, login, the tenant API with an access token, refresh, logout; what
a reused or revoked token gets; password reset; bad input creating nothing."""

from __future__ import annotations

import uuid

import pytest

from colmena.actors.accounts import cleanup_accounts
from colmena.config import Settings
from tests.accounts_support import PASSWORD, accounts_settings, link_in, mails_to
from tests.bots_support import add_tenant, bearer, resources_for
from tests.standins.smtp import SmtpStandin
from tests.test_openapi import Checked


@pytest.fixture
def smtp():
    with SmtpStandin() as server:
        yield server


@pytest.fixture
async def api(settings: Settings, smtp: SmtpStandin, make_client):
    return await make_client(accounts_settings(settings, smtp))


def new_email() -> str:
    return f"ana-{uuid.uuid4().hex[:8]}@example.com"


async def signed_up(api, smtp: SmtpStandin, email: str, password: str = PASSWORD) -> str:
    """Sign up and return the verification token the email carried."""
    count = len(smtp.messages)
    response = await api.post("/api/v1/signup", json={"email": email, "password": password})
    assert response.status == 202
    await smtp.wait_for_async(count + 1)
    kind, token = link_in(mails_to(smtp, email)[-1])
    assert kind == "verify"
    return token


async def verified(api, smtp: SmtpStandin, email: str, password: str = PASSWORD) -> None:
    token = await signed_up(api, smtp, email, password)
    response = await api.get(f"/api/v1/verify/{token}")
    assert response.status == 200, await response.text()


async def login(api, email: str, password: str = PASSWORD) -> dict:
    response = await api.post("/api/v1/login", json={"email": email, "password": password})
    assert response.status == 200, await response.text()
    return await response.json()


async def test_sign_up_verify_log_in_use_the_api_refresh_and_log_out(api, smtp, db) -> None:
    email = new_email()
    token = await signed_up(api, smtp, email)
    [mail] = mails_to(smtp, email)
    assert mail.message["To"] == email
    assert await db.fetchval("SELECT tenant_id FROM accounts WHERE email = $1", email) is None

    page = await api.get(f"/api/v1/verify/{token}")
    assert page.status == 200 and page.content_type == "text/html"
    tenant = await db.fetchrow(
        "SELECT t.id, t.plan, t.plan_source, t.email FROM accounts a "
        "JOIN tenants t ON t.id = a.tenant_id WHERE a.email = $1",
        email,
    )
    assert (tenant["plan"], tenant["plan_source"], tenant["email"]) == ("free", "signup", email)
    again = await api.post("/api/v1/verify", json={"token": token})
    assert (again.status, await again.json()) == (200, {"status": "already_verified"})
    assert await db.fetchval("SELECT count(*) FROM tenants WHERE email = $1", email) == 1

    tokens = await login(api, email)
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 900
    config = await api.get("/api/v1/bot/config", headers=bearer(tokens["access_token"]))
    assert config.status == 200, await config.text()

    refreshed = await api.post(
        "/api/v1/token/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status == 200
    pair = await refreshed.json()
    assert pair["refresh_token"] != tokens["refresh_token"]
    assert (await api.get("/api/v1/bot/config", headers=bearer(pair["access_token"]))).status == 200

    out = await api.post("/api/v1/logout", json={"refresh_token": pair["refresh_token"]})
    assert out.status == 204
    for access in (tokens["access_token"], pair["access_token"]):
        refused = await api.get("/api/v1/bot/config", headers=bearer(access))
        assert refused.status == 401
    after = await api.post("/api/v1/token/refresh", json={"refresh_token": pair["refresh_token"]})
    assert after.status == 401


async def test_operator_tokens_keep_working_beside_access_tokens(api, db) -> None:
    _, operator_token = await add_tenant(db)
    response = await api.get("/api/v1/bot/config", headers=bearer(operator_token))
    assert response.status == 200


async def test_argon2id_hash_with_the_configured_cost_and_no_plaintext(api, smtp, db) -> None:
    email = new_email()
    await signed_up(api, smtp, email)
    stored = await db.fetchval("SELECT password_hash FROM accounts WHERE email = $1", email)
    assert stored.startswith("$argon2id$v=19$m=8192,t=1,p=1$")
    dump = await db.fetchval("SELECT string_agg(t::text, ' ') FROM account_links t")
    assert PASSWORD not in stored and PASSWORD not in dump


async def test_a_reused_refresh_token_revokes_its_whole_session(api, smtp) -> None:
    email = new_email()
    await verified(api, smtp, email)
    first = await login(api, email)
    rotated = await api.post(
        "/api/v1/token/refresh", json={"refresh_token": first["refresh_token"]}
    )
    second = await rotated.json()
    replay = await api.post("/api/v1/token/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status == 401
    assert (await replay.json())["error"]["code"] == "invalid_token"
    for token in (second["access_token"], first["access_token"]):
        assert (await api.get("/api/v1/bot/config", headers=bearer(token))).status == 401
    stolen = await api.post(
        "/api/v1/token/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert stolen.status == 401
    other = await login(api, email)  # another login is another session, untouched
    assert (
        await api.get("/api/v1/bot/config", headers=bearer(other["access_token"]))
    ).status == 200


async def test_password_reset_is_single_use_and_ends_every_session(api, smtp, db) -> None:
    email = new_email()
    await verified(api, smtp, email)
    sessions = [await login(api, email), await login(api, email)]
    count = len(smtp.messages)
    assert (await api.post("/api/v1/password/forgot", json={"email": email})).status == 202
    await smtp.wait_for_async(count + 1)
    kind, token = link_in(mails_to(smtp, email)[-1])
    assert kind == "password/reset"
    form = await api.get(f"/api/v1/password/reset/{token}")
    assert form.status == 200 and token in await form.text()

    weak = await api.post("/api/v1/password/reset", json={"token": token, "password": "short"})
    assert weak.status == 422
    new_password = "a much longer new secret"
    done = await api.post("/api/v1/password/reset", json={"token": token, "password": new_password})
    assert (done.status, await done.json()) == (
        200,
        {"status": "password_changed", "sessions_revoked": 2},
    )
    for tokens in sessions:
        assert (
            await api.get("/api/v1/bot/config", headers=bearer(tokens["access_token"]))
        ).status == 401
        refresh = await api.post(
            "/api/v1/token/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert refresh.status == 401
    again = await api.post("/api/v1/password/reset", json={"token": token, "password": "x" * 20})
    assert again.status == 404
    old = await api.post("/api/v1/login", json={"email": email, "password": PASSWORD})
    assert old.status == 401
    await login(api, email, new_password)


async def test_the_reset_form_posts_and_answers_a_page(api, smtp) -> None:
    email = new_email()
    await verified(api, smtp, email)
    count = len(smtp.messages)
    await api.post("/api/v1/password/forgot", json={"email": email})
    await smtp.wait_for_async(count + 1)
    _, token = link_in(mails_to(smtp, email)[-1])
    new_password = "typed into the form page"
    page = await api.post("/api/v1/password/reset", data={"token": token, "password": new_password})
    assert page.status == 200 and page.content_type == "text/html"
    await login(api, email, new_password)


async def test_an_access_token_whose_tenant_is_gone_is_refused(api, smtp, db) -> None:
    email = new_email()
    await verified(api, smtp, email)
    tokens = await login(api, email)
    tenant_id = await db.fetchval("SELECT tenant_id FROM accounts WHERE email = $1", email)
    await db.execute("DELETE FROM tenants WHERE id = $1", tenant_id)
    response = await api.get("/api/v1/bot/config", headers=bearer(tokens["access_token"]))
    assert response.status == 401
    refused = await api.post("/api/v1/login", json={"email": email, "password": PASSWORD})
    assert refused.status == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "ana@example.com", "password": "too short"}, "password"),
        ({"email": "ana@example.com", "password": "x" * 129}, "password"),
        ({"email": "longlocalpart@example.com", "password": "LongLocalPart"}, "password"),
        ({"email": "ana.torres@example.com", "password": "ana.torres@example.com"}, "password"),
        ({"email": ["ana@example.com"], "password": PASSWORD}, "email"),
        ({"email": "ana@example.com", "password": 123456789012}, "password"),
    ],
)
async def test_bad_sign_up_input_is_a_422_and_creates_nothing(api, smtp, db, body, field) -> None:
    response = await api.post("/api/v1/signup", json=body)
    assert response.status == 422
    assert [f["field"] for f in (await response.json())["error"]["fields"]] == [field]
    assert await db.fetchval("SELECT count(*) FROM accounts") == 0
    assert smtp.messages == []


async def test_bodies_that_are_not_objects_are_refused(api, db) -> None:
    for path in ("/api/v1/signup", "/api/v1/login", "/api/v1/password/forgot"):
        not_json = await api.post(path, data=b"{", headers={"Content-Type": "application/json"})
        assert not_json.status == 400
        array = await api.post(path, json=[1])
        assert array.status == 422
    assert await db.fetchval("SELECT count(*) FROM accounts") == 0


async def test_links_that_are_not_valid(api, smtp, db) -> None:
    forged = "cml_" + "A" * 43
    assert (await api.get(f"/api/v1/verify/{forged}")).status == 404
    assert (await api.post("/api/v1/verify", json={"token": "nope"})).status == 404
    assert (await api.get("/api/v1/password/reset/nope")).status == 404
    reset = await api.post("/api/v1/password/reset", json={"token": forged, "password": PASSWORD})
    assert reset.status == 404
    email = new_email()
    token = await signed_up(api, smtp, email)
    await db.execute("UPDATE account_links SET expires_at = now() - interval '1 second'")
    assert (await api.get(f"/api/v1/verify/{token}")).status == 404
    assert await db.fetchval("SELECT count(*) FROM tenants") == 0


async def test_a_second_sign_up_before_verifying_replaces_the_link_and_password(
    api, smtp, db
) -> None:
    email = new_email()
    first = await signed_up(api, smtp, email)
    second = await signed_up(api, smtp, email, "the second password given")
    assert (await api.get(f"/api/v1/verify/{first}")).status == 404
    assert (await api.get(f"/api/v1/verify/{second}")).status == 200
    assert (
        await api.post("/api/v1/login", json={"email": email, "password": PASSWORD})
    ).status == 401
    await login(api, email, "the second password given")


async def test_every_account_answer_matches_the_document(api, smtp) -> None:
    checked = Checked(api)
    email = new_email()
    signup = {"email": email, "password": PASSWORD}
    assert (await checked.call("/api/v1/signup", "POST", json=signup))[0] == 202
    assert (await checked.call("/api/v1/signup", "POST", json={"email": "x"}))[0] == 422
    await smtp.wait_for_async(1)
    _, token = link_in(mails_to(smtp, email)[0])
    login_body = {"email": email, "password": PASSWORD}
    assert (await checked.call("/api/v1/login", "POST", json=login_body))[0] == 401
    page = "/api/v1/verify/{token}"
    assert (await checked.call(page, "GET", f"/api/v1/verify/{token}"))[0] == 200
    assert (await checked.call(page, "GET", "/api/v1/verify/nope"))[0] == 404
    verify = await checked.call("/api/v1/verify", "POST", json={"token": token})
    assert verify == (200, {"status": "already_verified"})
    assert (await checked.call("/api/v1/verify", "POST", json={"token": "no"}))[0] == 404
    _, tokens = await checked.call("/api/v1/login", "POST", json=login_body)
    refresh = {"refresh_token": tokens["refresh_token"]}
    _, pair = await checked.call("/api/v1/token/refresh", "POST", json=refresh)
    assert (await checked.call("/api/v1/token/refresh", "POST", json=refresh))[0] == 401
    logout = {"refresh_token": pair["refresh_token"]}
    assert (await checked.call("/api/v1/logout", "POST", json=logout))[0] == 204
    assert (await checked.call("/api/v1/logout", "POST", json={}))[0] == 422
    forgot = {"email": email}
    assert (await checked.call("/api/v1/password/forgot", "POST", json=forgot))[0] == 202
    await smtp.wait_for_async(2)
    _, reset_token = link_in(mails_to(smtp, email)[-1])
    form = "/api/v1/password/reset/{token}"
    assert (await checked.call(form, "GET", f"/api/v1/password/reset/{reset_token}"))[0] == 200
    reset = "/api/v1/password/reset"
    short = {"token": reset_token, "password": "short"}
    assert (await checked.call(reset, "POST", json=short))[0] == 422
    assert (await checked.call(reset, "POST", data=short))[0] == 422
    good = {"token": reset_token, "password": "a good new password"}
    assert (await checked.call(reset, "POST", json=good))[0] == 200
    assert (await checked.call(reset, "POST", json=good))[0] == 404
    assert (await checked.call(reset, "POST", data=good))[0] == 404
    checked.assert_covers("accounts")


async def test_cleanup_removes_what_expired_a_day_ago_and_keeps_what_still_works(
    api, smtp, db, settings: Settings
) -> None:
    email = new_email()
    await verified(api, smtp, email)
    tokens = await login(api, email)
    await login(api, email)  # a second session, which stays live
    await db.execute(
        "UPDATE account_links SET expires_at = now() - interval '2 days', "
        "created_at = now() - interval '3 days'"
    )
    stale_session = await db.fetchval(
        "SELECT session_id FROM session_tokens ORDER BY created_at LIMIT 1"
    )
    await db.execute(
        "UPDATE session_tokens SET expires_at = now() - interval '2 days' WHERE session_id = $1",
        stale_session,
    )
    await db.execute(
        "UPDATE account_sessions SET created_at = now() - interval '40 days' WHERE id = $1",
        stale_session,
    )
    resources = resources_for(accounts_settings(settings, smtp))
    await resources.start()
    try:
        removed = await cleanup_accounts(resources)
    finally:
        await resources.close()
    assert removed == {"links": 1, "tokens": 2, "sessions": 1}
    assert await db.fetchval("SELECT count(*) FROM account_sessions") == 1
    assert await db.fetchval("SELECT count(*) FROM session_tokens") == 2
    refused = await api.get("/api/v1/bot/config", headers=bearer(tokens["access_token"]))
    assert refused.status == 401
