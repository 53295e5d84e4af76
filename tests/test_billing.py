"""Tenant upgrades: subscription checkouts and the portal through the official `stripe` library
against a local Stripe Billing stand-in, the subscription's webhooks moving the plan, and plan
limits (capital, log retention) applied when the plan moves.

Real PostgreSQL and RabbitMQ; bots on the local process runtime (the plan's effect on a running
container is test_tenants_api's subject).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from colmena.actors.bots import change_plan, ship_logs
from colmena.gateways import sample_events as events
from colmena.sandbox.catalog import seed_sample_catalog
from colmena.sandbox.stripe_billing import WebhookTarget
from colmena.store import bot_logs
from colmena.store import tenants as store
from colmena.supervisor.runtimes import close_runtimes
from tests.bots_support import add_tenant, bearer, bot_settings, resources_for
from tests.conftest import wait_for
from tests.payments_support import STRIPE_SECRET, stripe_post_args
from tests.standins.stripe_billing_api import StripeBillingStandin
from tests.test_openapi import Checked

CUSTOMERS, SESSIONS, PORTALS, PRICES, CONFIGURATIONS = (
    "/v1/customers",
    "/v1/checkout/sessions",
    "/v1/billing_portal/sessions",
    "/v1/prices",
    "/v1/billing_portal/configurations",
)


@pytest.fixture
async def stripe_api():
    standin = StripeBillingStandin(WebhookTarget("", STRIPE_SECRET))
    await standin.start()
    yield standin
    await standin.stop()


@pytest.fixture
def billing(settings, tmp_path: Path, stripe_api):
    yield bot_settings(settings, tmp_path, "process", None).model_copy(
        update={
            "stripe_secret_key": SecretStr("sk_test_billing"),
            "stripe_api_url": stripe_api.url,
            "stripe_webhook_secrets": SecretStr(STRIPE_SECRET),
            "checkout_timeout_s": 2.0,
        }
    )
    close_runtimes()


@pytest.fixture
async def tenant(db):
    await seed_sample_catalog(db)
    return await add_tenant(db)


async def checkout(client, token: str, body: dict, **headers: str):
    return await client.post(
        "/api/v1/billing/checkout", json=body, headers={**bearer(token), **headers}
    )


async def test_checkout_is_a_subscription_session_for_the_tenants_one_customer(
    billing, db, make_client, stripe_api, tenant
) -> None:
    tenant_id, token = tenant
    client = await make_client(billing)
    first = await checkout(client, token, {"plan": "pro"})
    assert first.status == 201, await first.text()
    body = await first.json()
    assert body["plan"] == "pro" and body["currency"] == "USD" and body["amount"] == "17.00"
    assert body["billing_period"] == "month" and body["session_id"].startswith("cs_test_")
    assert body["url"] == f"{stripe_api.url}/checkout/{body['session_id']}"

    [customer] = stripe_api.api_requests(CUSTOMERS)
    assert customer.params == {
        "email": f"{tenant_id}@example.com",
        "metadata": {"tenant_id": tenant_id},
    }
    assert customer.idempotency_key == f"colmena-customer-{tenant_id}"
    [session] = stripe_api.api_requests(SESSIONS)
    stored = await db.fetchval(
        "SELECT customer_id FROM billing_customers WHERE tenant_id = $1", tenant_id
    )
    metadata = {
        "tenant_id": tenant_id,
        "plan": "pro",
        "product": "plan-pro",
        "product_kind": "plan",
    }
    params = session.params
    assert (params["mode"], params["customer"], params["client_reference_id"]) == (
        "subscription",
        stored,
        tenant_id,
    )
    assert params["metadata"] == params["subscription_data"]["metadata"] == metadata
    assert params["line_items"] == [
        {
            "quantity": "1",
            "price_data": {
                "currency": "usd",
                "unit_amount": "1700",
                "recurring": {"interval": "month"},
                "product_data": {"name": "Pro"},
            },
        }
    ]
    assert params["success_url"].endswith(
        "/billing/return?status=success&session_id={CHECKOUT_SESSION_ID}"
    )

    # Another checkout (in pesos this time) names the same customer: none is created again.
    again = await checkout(client, token, {"plan": "enterprise", "currency": "MXN"})
    assert again.status == 201 and (await again.json())["amount"] == "1999.00"
    assert len(stripe_api.api_requests(CUSTOMERS)) == 1
    assert stripe_api.api_requests(SESSIONS)[-1].params["customer"] == stored

    page = await client.get("/billing/return", params={"status": "cancel"})
    assert page.status == 200 and "plan is unchanged" in await page.text()


async def test_a_retried_checkout_with_its_idempotency_key_returns_the_same_session(
    billing, make_client, stripe_api, tenant
) -> None:
    tenant_id, token = tenant
    client = await make_client(billing)
    answers = [
        await checkout(client, token, {"plan": "pro"}, **{"Idempotency-Key": "k-1"})
        for _ in range(2)
    ]
    ids = {(await answer.json())["session_id"] for answer in answers}
    assert len(ids) == 1
    assert {seen.idempotency_key for seen in stripe_api.api_requests(SESSIONS)} == {
        f"colmena-billing-{tenant_id}-k-1"
    }
    assert len(stripe_api.ledger.sessions) == 1


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"plan": "free"}, 422, "plan"),
        ({"plan": "gold"}, 404, "plan_not_sold"),
        ({"plan": 5}, 422, "plan"),
        ({}, 422, "plan"),
        ({"plan": "pro", "currency": "EUR"}, 404, "price_not_found"),  # no price in euros
        ({"plan": "pro", "currency": "usd"}, 422, "currency"),
        ({"plan": "pro", "price": "1"}, 422, "price"),  # prices never come from the client
        (["pro"], 422, "body"),
    ],
)
async def test_bad_checkout_requests_are_4xx_and_reach_no_stripe(
    billing, make_client, stripe_api, tenant, body, status, field
) -> None:
    _, token = tenant
    client = await make_client(billing)
    response = await checkout(client, token, body)
    assert response.status == status, await response.text()
    error = (await response.json())["error"]
    if status == 404:  # nothing of that name on sale: the error's code says which
        assert error["code"] == field
    else:
        assert field in {item["field"] for item in error["fields"]}
    assert stripe_api.requests == []


async def test_checkout_refusals_that_depend_on_the_tenant(
    billing, db, make_client, stripe_api, tenant
) -> None:
    tenant_id, token = tenant
    client = await make_client(billing)
    assert (await client.post("/api/v1/billing/checkout", json={"plan": "pro"})).status == 401
    not_json = await client.post("/api/v1/billing/checkout", data=b"{", headers=bearer(token))
    assert not_json.status == 400
    assert (
        await checkout(client, token, {"plan": "pro"}, **{"Idempotency-Key": "é"})
    ).status == 400
    assert (await checkout(client, token, {"plan": "pro"}, **{"Idempotency-Key": ""})).status == 400
    await store.set_plan(
        db, tenant_id, "pro", source="subscription:sub_1", provider_at=datetime.now(UTC)
    )
    already = await checkout(client, token, {"plan": "pro"})
    assert already.status == 409 and (await already.json())["error"]["code"] == "already_on_plan"
    assert stripe_api.requests == []
    # A plan from a subscription Stripe does not know: no switch, and no second subscription.
    unknown = await checkout(client, token, {"plan": "enterprise"})
    assert unknown.status == 409, await unknown.text()
    assert (await unknown.json())["error"]["code"] == "subscription_unknown"
    assert [seen.path for seen in stripe_api.requests] == ["/v1/subscriptions/sub_1"]


async def test_stripe_down_is_503_and_the_retry_works(
    billing, make_client, stripe_api, tenant
) -> None:
    _, token = tenant
    client = await make_client(billing)
    stripe_api.failing = True
    down = await checkout(client, token, {"plan": "pro"})
    assert down.status == 503 and (await down.json())["error"]["code"] == "provider_unavailable"
    assert down.headers["Retry-After"] == "5"
    stripe_api.failing = False
    assert (await checkout(client, token, {"plan": "pro"})).status == 201


async def test_unconfigured_stripe_is_503(billing, make_client, tenant) -> None:
    _, token = tenant
    client = await make_client(billing.model_copy(update={"stripe_secret_key": None}))
    response = await checkout(client, token, {"plan": "pro"})
    assert response.status == 503 and (await response.json())["error"]["code"] == "not_configured"


async def test_portal_needs_a_customer_then_opens_for_it(
    billing, db, make_client, stripe_api, tenant
) -> None:
    tenant_id, token = tenant
    client = await make_client(billing)
    none_yet = await client.post("/api/v1/billing/portal", headers=bearer(token))
    assert none_yet.status == 409 and (await none_yet.json())["error"]["code"] == "no_customer"
    assert stripe_api.requests == []
    assert (await checkout(client, token, {"plan": "pro"})).status == 201
    opened = await client.post("/api/v1/billing/portal", headers=bearer(token))
    assert opened.status == 201, await opened.text()
    body = await opened.json()
    assert body["url"] == f"{stripe_api.url}/portal/{body['session_id']}"
    [portal] = stripe_api.api_requests(PORTALS)
    customer = await db.fetchval(
        "SELECT customer_id FROM billing_customers WHERE tenant_id = $1", tenant_id
    )
    assert portal.params["customer"] == customer
    assert portal.params["return_url"].endswith("/billing/return?status=portal")


async def plan_of(db, tenant_id: str) -> str:
    return (await store.get_tenant(db, tenant_id)).plan


async def plan_changes(db, tenant_id: str) -> int:
    return await db.fetchval("SELECT count(*) FROM plan_changes WHERE tenant_ref = $1", tenant_id)


async def test_paid_checkout_raises_the_plan_and_the_subscription_lifecycle_moves_it(
    billing, db, make_client, start_worker, stripe_api, tenant
) -> None:
    tenant_id, token = tenant
    start_worker(settings_override=billing, queues=["payments", "bots"])
    client = await make_client(billing)
    session = await (await checkout(client, token, {"plan": "pro"})).json()
    stripe_api.target.url = str(client.make_url("/webhooks/stripe"))
    async with aiohttp.ClientSession() as browser:
        paid = await browser.post(session["url"] + "/pay", allow_redirects=False)
    assert paid.status == 303 and session["session_id"] in paid.headers["Location"]
    assert [event["type"] for event in stripe_api.ledger.posted] == [
        "customer.subscription.created",
        "checkout.session.completed",
        "invoice.paid",
    ]

    async def after_change(count: int) -> str:
        async def recorded() -> bool:
            return await plan_changes(db, tenant_id) >= count

        await wait_for(recorded)
        return await plan_of(db, tenant_id)

    async def post(kind: str, obj: dict, created: int) -> None:
        response = await client.post(
            "/webhooks/stripe", **stripe_post_args(events.stripe_event(kind, obj, created=created))
        )
        assert response.status == 200

    async def all_processed() -> bool:
        return await db.fetchval("SELECT count(*) FROM inbox WHERE processed_at IS NOT NULL") >= 3

    # customer.subscription.created and invoice.paid both say "pro from this subscription, at
    # this second": one plan change (the outbox dedupes it), applied at once.
    await wait_for(all_processed)
    assert await after_change(1) == "pro"
    outcomes = await db.fetch("SELECT outcome FROM plan_changes WHERE tenant_ref = $1", tenant_id)
    assert [row["outcome"] for row in outcomes] == ["applied"]
    # The plan change asked for the bot to be reconciled.
    reconciles = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE actor = 'reconcile_tenant' AND args = $1::jsonb",
        [tenant_id],
    )
    assert reconciles >= 1
    [subscription] = stripe_api.ledger.subscriptions.values()
    at = int(datetime.now(UTC).timestamp())
    seen = 1

    # Cancelled at the period's end: the plan holds until Stripe ends the subscription.
    await post(
        "customer.subscription.updated", {**subscription, "cancel_at_period_end": True}, at + 10
    )
    assert await after_change(seen + 1) == "pro"
    # A failed renewal: the invoice fails and the subscription goes past_due while Stripe retries.
    failed = events.invoice(
        subscription_id=subscription["id"], metadata=subscription["metadata"], paid=False
    )
    await post("invoice.payment_failed", failed, at + 20)
    await post("customer.subscription.updated", {**subscription, "status": "past_due"}, at + 21)
    assert await after_change(seen + 2) == "pro"
    # Retries exhausted (unpaid): back to free.
    await post("customer.subscription.updated", {**subscription, "status": "unpaid"}, at + 30)
    assert await after_change(seen + 3) == "free"
    failed_payment = await db.fetchval(
        "SELECT status FROM payments WHERE provider_payment_id = $1", failed["id"]
    )
    assert failed_payment == "rejected"


async def test_a_shrinking_plan_stops_a_bot_over_its_capital_until_the_config_fits(
    billing, db, make_client
) -> None:
    tenant_id, token = await add_tenant(
        db,
        plan="pro",
        config={"symbols": ["BTCUSDT", "ETHUSDT"], "mode": "live", "capital": "5000"},
    )
    await store.set_desired(db, tenant_id, "running", reset_restarts=True)
    async with db.transaction():
        outcome, reconcile = await change_plan(
            db, tenant_id, "free", True, "operator-test", datetime.now(UTC)
        )
    assert outcome == "applied" and reconcile is not None
    bot = await store.get_bot(db, tenant_id)
    assert bot.desired == "stopped"
    assert bot.config == {"symbols": ["BTCUSDT"], "mode": "paper", "capital": "5000"}  # kept as set

    client = await make_client(billing)
    start = await client.post("/api/v1/bot/start", headers=bearer(token))
    assert start.status == 409, await start.text()
    assert (await start.json())["error"]["code"] == "config_over_plan"
    over = {"symbols": ["BTCUSDT"], "mode": "paper", "capital": "5000"}
    refused = await client.put("/api/v1/bot/config", json=over, headers=bearer(token))
    assert refused.status == 422
    assert (await refused.json())["error"]["fields"] == [
        {"field": "capital", "message": "plan free allows a capital of at most 1000"}
    ]
    limits = (await (await client.get("/api/v1/bot/config", headers=bearer(token))).json())[
        "limits"
    ]
    assert limits["max_capital"] == "1000"
    fits = await client.put(
        "/api/v1/bot/config", json={**over, "capital": "900"}, headers=bearer(token)
    )
    assert fits.status == 202
    assert (await client.post("/api/v1/bot/start", headers=bearer(token))).status == 202


async def test_a_plan_change_changes_how_long_logs_are_kept(billing, db) -> None:
    tenant_id, _ = await add_tenant(db, plan="pro")  # keeps logs 7 days
    now = datetime.now(UTC)
    await bot_logs.append(
        db, tenant_id, 1, [(now - timedelta(days=3), "three days old"), (now, "new")]
    )
    resources = resources_for(billing)
    await resources.start()
    try:
        await ship_logs(resources)
        assert len(await bot_logs.newest(db, tenant_id, 10)) == 2
        async with db.transaction():
            await change_plan(db, tenant_id, "free", True, "operator-test", now)  # keeps 1 day
        await ship_logs(resources)
    finally:
        await resources.close()
    assert [line.line for line in await bot_logs.newest(db, tenant_id, 10)] == ["new"]


async def test_billing_answers_match_the_openapi_document(
    billing, make_client, stripe_api, tenant
) -> None:
    _, token = tenant
    api = Checked(await make_client(billing))
    me = bearer(token)
    portal, path = "/api/v1/billing/portal", "/api/v1/billing/checkout"
    assert (await api.call(portal, "POST", headers=me))[0] == 409
    assert (await api.call(path, "POST", json={"plan": "gold"}, headers=me))[0] == 404
    assert (await api.call(path, "POST", json={"plan": ""}, headers=me))[0] == 422
    assert (await api.call(path, "POST", json={"plan": "pro"}, headers=me))[0] == 201
    assert (await api.call(portal, "POST", headers=me))[0] == 201
    api.assert_covers("billing")
    stripe_api.failing = True
    assert (await api.call(path, "POST", json={"plan": "enterprise"}, headers=me))[0] == 503


# Switching plans on a live subscription -------------------------------------------------------


async def subscribed(client, db, stripe_api, tenant_id: str, token: str) -> dict:
    """The tenant on pro through a paid sandbox checkout (webhooks and all); its subscription as
    Stripe holds it (the stand-in's object: a switch changes it in place)."""
    session = await (await checkout(client, token, {"plan": "pro"})).json()
    stripe_api.target.url = str(client.make_url("/webhooks/stripe"))
    async with aiohttp.ClientSession() as browser:
        paid = await browser.post(session["url"] + "/pay", allow_redirects=False)
    assert paid.status == 303

    async def on_pro() -> bool:
        return await plan_of(db, tenant_id) == "pro"

    await wait_for(on_pro)
    [subscription] = stripe_api.ledger.subscriptions.values()
    later(stripe_api)
    return subscription


def later(stripe_api) -> None:
    """A minute passes on Stripe's clock: the next change is not in the second of the last one
    (Stripe's event times are whole seconds)."""
    stripe_api.ledger.clock_offset += 60


async def reconciles(db, tenant_id: str) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM outbox WHERE actor = 'reconcile_tenant' AND args = $1::jsonb",
        [tenant_id],
    )


async def wait_plan(db, tenant_id: str, plan: str) -> None:
    async def there() -> bool:
        return await plan_of(db, tenant_id) == plan

    await wait_for(there)


async def test_pro_to_enterprise_switches_the_subscription_and_its_event_raises_the_plan(
    billing, db, make_client, start_worker, stripe_api, tenant
) -> None:
    tenant_id, token = tenant
    start_worker(settings_override=billing, queues=["payments", "bots"])
    client = await make_client(billing)
    subscription = await subscribed(client, db, stripe_api, tenant_id, token)
    [item] = subscription["items"]["data"]
    reconciled = await reconciles(db, tenant_id)
    stripe_api.requests.clear()

    status, body = await Checked(client).call(
        "/api/v1/billing/checkout",
        "POST",
        json={"plan": "enterprise"},
        headers={**bearer(token), "Idempotency-Key": "up-1"},
    )
    assert status == 200, body
    assert body == {
        "changed": True,
        "plan": "enterprise",
        "effective": "now",
        "subscription_id": subscription["id"],
        "status": "active",
        "currency": "USD",
        "amount": "109.00",
        "billing_period": "month",
    }
    # Stripe saw: the subscription read, a price from the catalog, then one update with that
    # price on the subscription's item, prorated, and the new plan in its metadata.
    paths = [seen.path for seen in stripe_api.requests]
    sub_path = f"/v1/subscriptions/{subscription['id']}"
    assert paths == [sub_path, PRICES, sub_path]
    [price] = stripe_api.api_requests(PRICES)
    metadata = {
        "tenant_id": tenant_id,
        "plan": "enterprise",
        "product": "plan-enterprise",
        "product_kind": "plan",
    }
    assert price.params == {
        "currency": "usd",
        "unit_amount": "10900",
        "recurring": {"interval": "month"},
        "product_data": {"name": "Enterprise", "metadata": metadata},
        "metadata": metadata,
    }
    assert price.idempotency_key == f"colmena-billing-{tenant_id}-up-1-price"
    update = stripe_api.requests[-1]
    [price_id] = [p for p in stripe_api.ledger.prices]
    assert update.params == {
        "items": [{"id": item["id"], "price": price_id}],
        "proration_behavior": "create_prorations",
        "metadata": metadata,
    }
    assert update.idempotency_key == f"colmena-billing-{tenant_id}-up-1"

    # Stripe's customer.subscription.updated (signed, from the stand-in) moves the plan.
    await wait_plan(db, tenant_id, "enterprise")
    updated = [e for e in stripe_api.ledger.posted if e["type"] == "customer.subscription.updated"]
    assert [e["data"]["previous_attributes"]["metadata"]["plan"] for e in updated] == ["pro"]
    last = await db.fetchrow(
        "SELECT plan, outcome, source FROM plan_changes WHERE tenant_ref = $1 "
        "ORDER BY id DESC LIMIT 1",
        tenant_id,
    )
    assert dict(last) == {
        "plan": "enterprise",
        "outcome": "applied",
        "source": f"subscription:{subscription['id']}",
    }
    assert await reconciles(db, tenant_id) > reconciled
    limits = (await (await client.get("/api/v1/bot/config", headers=bearer(token))).json())[
        "limits"
    ]
    assert limits["max_capital"] == "10000000"


async def test_enterprise_to_pro_lowers_the_plan_and_its_limits(
    billing, db, make_client, start_worker, stripe_api, tenant
) -> None:
    tenant_id, token = tenant
    start_worker(settings_override=billing, queues=["payments", "bots"])
    client = await make_client(billing)
    subscription = await subscribed(client, db, stripe_api, tenant_id, token)
    assert (await checkout(client, token, {"plan": "enterprise"})).status == 200
    await wait_plan(db, tenant_id, "enterprise")
    later(stripe_api)
    big = {"symbols": ["BTCUSDT"], "mode": "paper", "capital": "500000"}  # over pro's 100000
    assert (await client.put("/api/v1/bot/config", json=big, headers=bearer(token))).status == 202

    down = await checkout(client, token, {"plan": "pro"})
    assert down.status == 200, await down.text()
    assert (await down.json())["amount"] == "17.00"
    assert subscription["metadata"]["plan"] == "pro"
    assert subscription["items"]["data"][0]["price"]["unit_amount"] == 1700
    await wait_plan(db, tenant_id, "pro")
    start = await client.post("/api/v1/bot/start", headers=bearer(token))
    assert start.status == 409 and (await start.json())["error"]["code"] == "config_over_plan"


async def test_same_plan_is_409_and_a_retried_switch_is_not_made_twice(
    billing, db, make_client, start_worker, stripe_api, tenant
) -> None:
    tenant_id, token = tenant
    start_worker(settings_override=billing, queues=["payments", "bots"])
    client = await make_client(billing)
    subscription = await subscribed(client, db, stripe_api, tenant_id, token)
    stripe_api.requests.clear()
    same = await checkout(client, token, {"plan": "pro"})
    assert same.status == 409 and (await same.json())["error"]["code"] == "already_on_plan"
    assert stripe_api.requests == []

    # The switch's event is held back (it goes nowhere): a retry finds the subscription switched
    # already and answers the same, without a second update.
    stripe_api.target.url = str(client.make_url("/nowhere"))
    first = await checkout(client, token, {"plan": "enterprise"}, **{"Idempotency-Key": "u"})
    again = await checkout(client, token, {"plan": "enterprise"}, **{"Idempotency-Key": "u"})
    assert first.status == again.status == 200
    assert await first.json() == await again.json()
    updates = [
        seen
        for seen in stripe_api.requests
        if seen.path == f"/v1/subscriptions/{subscription['id']}" and seen.params
    ]
    assert len(updates) == 1
    assert await plan_of(db, tenant_id) == "pro"


async def test_a_stale_subscription_update_does_not_undo_a_switch(
    billing, db, make_client, start_worker, stripe_api, tenant
) -> None:
    tenant_id, token = tenant
    start_worker(settings_override=billing, queues=["payments", "bots"])
    client = await make_client(billing)
    subscription = await subscribed(client, db, stripe_api, tenant_id, token)
    before = copy.deepcopy(subscription)  # pro, as an event older than the switch shows it
    assert (await checkout(client, token, {"plan": "enterprise"})).status == 200
    await wait_plan(db, tenant_id, "enterprise")
    [switched] = [
        e for e in stripe_api.ledger.posted if e["type"] == "customer.subscription.updated"
    ]
    count = await plan_changes(db, tenant_id)

    late = events.stripe_event(
        "customer.subscription.updated", before, created=switched["created"] - 30
    )
    response = await client.post("/webhooks/stripe", **stripe_post_args(late))
    assert response.status == 200

    async def recorded() -> bool:
        return await plan_changes(db, tenant_id) > count

    await wait_for(recorded)
    last = await db.fetchrow(
        "SELECT plan, outcome FROM plan_changes WHERE tenant_ref = $1 ORDER BY id DESC LIMIT 1",
        tenant_id,
    )
    assert dict(last) == {"plan": "pro", "outcome": "stale"}
    assert await plan_of(db, tenant_id) == "enterprise"


async def test_switch_refusals_keep_the_subscription_as_it_is(
    billing, db, make_client, start_worker, stripe_api, tenant
) -> None:
    tenant_id, token = tenant
    start_worker(settings_override=billing, queues=["payments", "bots"])
    client = await make_client(billing)
    subscription = await subscribed(client, db, stripe_api, tenant_id, token)
    stripe_api.requests.clear()
    other_currency = await checkout(client, token, {"plan": "enterprise", "currency": "MXN"})
    assert other_currency.status == 422
    assert (await other_currency.json())["error"]["fields"] == [
        {"field": "currency", "message": "the subscription is billed in USD; a switch keeps it"}
    ]
    subscription["status"] = "past_due"  # a renewal failed; Stripe is retrying
    retrying = await checkout(client, token, {"plan": "enterprise"})
    assert retrying.status == 409
    assert (await retrying.json())["error"]["code"] == "subscription_not_active"
    assert stripe_api.api_requests(PRICES) == []
    assert all(not seen.params for seen in stripe_api.requests)  # reads only, no update
    assert subscription["metadata"]["plan"] == "pro"


async def test_the_portal_opens_with_a_configuration_that_offers_no_plan_switch(
    billing, db, make_client, stripe_api, tenant
) -> None:
    tenant_id, token = tenant
    client = await make_client(billing)
    assert (await checkout(client, token, {"plan": "pro"})).status == 201

    async def open_portal() -> dict:
        opened = await client.post("/api/v1/billing/portal", headers=bearer(token))
        assert opened.status == 201, await opened.text()
        return await opened.json()

    first = await open_portal()
    [made] = stripe_api.api_requests(CONFIGURATIONS)
    assert made.params["features"] == {
        "subscription_update": {"enabled": "false"},
        "subscription_cancel": {"enabled": "true", "mode": "at_period_end"},
        "payment_method_update": {"enabled": "true"},
        "invoice_history": {"enabled": "true"},
        "customer_update": {"enabled": "false"},
    }
    [configuration] = stripe_api.ledger.configurations.values()
    assert configuration["features"]["subscription_update"]["enabled"] is False
    assert configuration["features"]["subscription_cancel"]["enabled"] is True
    kept = await db.fetchval("SELECT configuration_id FROM billing_portal_configurations")
    assert kept == configuration["id"]
    assert stripe_api.api_requests(PORTALS)[-1].params["configuration"] == kept
    async with aiohttp.ClientSession() as browser:
        page = await (await browser.get(first["url"])).text()
    assert "subscription_cancel" in page and "subscription_update" not in page

    # Reused: the second portal makes no configuration.
    await open_portal()
    assert len(stripe_api.api_requests(CONFIGURATIONS)) == 1
    assert stripe_api.api_requests(PORTALS)[-1].params["configuration"] == kept

    # A kept configuration Stripe does not know (another account): made again, then kept.
    await db.execute("UPDATE billing_portal_configurations SET configuration_id = 'bpc_gone'")
    await open_portal()
    assert len(stripe_api.api_requests(CONFIGURATIONS)) == 2
    assert await db.fetchval("SELECT configuration_id FROM billing_portal_configurations") == kept
    assert stripe_api.api_requests(PORTALS)[-1].params["configuration"] == kept
