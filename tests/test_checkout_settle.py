"""The webhook path settles a checkout's order: paid only when the amount and currency paid are
the order's, held otherwise with nothing following; the follow-ups read the order, never what
the provider echoed."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from colmena.actors.orders import expire_orders
from colmena.actors.payments import apply_update
from colmena.domain.money import to_minor
from colmena.domain.payment_events import PaymentUpdate, interpret_stripe
from colmena.gateways import sample_events
from colmena.store import orders, payments
from tests.bots_support import resources_for
from tests.conftest import wait_for
from tests.standins.stripe_api import SECRET_KEY, StripeApi
from tests.test_checkout import BODY, FISCAL, ROUTE, seed_catalog

WEBHOOK_SECRET = "whsec_checkout_settle"


@pytest.fixture
async def stripe_api():
    api = StripeApi()
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
def shop_settings(settings, stripe_api):
    return settings.model_copy(
        update={
            "stripe_secret_key": SecretStr(SECRET_KEY),
            "stripe_api_url": stripe_api.url,
            "stripe_webhook_secrets": SecretStr(WEBHOOK_SECRET),
        }
    )


@pytest.fixture
async def shop(db, make_client, shop_settings):
    await seed_catalog(db)
    return await make_client(shop_settings)


async def _order(shop, db, **change: Any) -> orders.Order:
    response = await shop.post(ROUTE, json=BODY | change)
    assert response.status == 201, await response.text()
    order = await orders.get(db, uuid.UUID((await response.json())["order_id"]))
    assert order is not None
    return order


def _session_event(order_id: str, *, amount: int, currency: str = "mxn", **metadata: str):
    session = sample_events.checkout_session(
        payment_intent_id=sample_events.new_id("pi"),
        amount=amount,
        currency=currency,
        email="echo@provider.example",
        metadata={"order_id": order_id, **metadata},
    )
    update = interpret_stripe(sample_events.stripe_event("checkout.session.completed", session))
    assert isinstance(update, PaymentUpdate)
    return update


async def _apply(db, update: PaymentUpdate) -> tuple[str, list[str]]:
    async with db.transaction():
        outcome, rows = await apply_update(db, update, None)
    return outcome, sorted(row.actor for row in rows if row is not None)


async def test_paying_through_the_provider_settles_the_order_from_its_own_data(
    shop, db, stripe_api, start_worker, shop_settings
) -> None:
    order = await _order(shop, db, fiscal=FISCAL, locale="en")
    stripe_api.target.url = str(shop.make_url("/webhooks/stripe"))
    stripe_api.target.secret = WEBHOOK_SECRET
    start_worker(settings_override=shop_settings, queues=["payments"])
    async with aiohttp.ClientSession() as http:
        paid = await http.post(
            f"{stripe_api.url}/checkout/{order.provider_ref}/pay", allow_redirects=False
        )
    assert paid.status == 303
    assert paid.headers["Location"].endswith(f"/checkout/success?order={order.id}")

    async def settled() -> orders.Order | None:
        current = await orders.get(db, order.id)
        return current if current is not None and current.status == "paid" else None

    done = await wait_for(settled, timeout=30)
    payment = await payments.get(db, done.payment_id)
    assert payment is not None and payment.status == "approved"
    assert await db.fetchval("SELECT order_id FROM payments WHERE id = $1", payment.id) == order.id
    assert (payment.product_ref, payment.product_kind) == ("smartcompute", "license")
    assert payment.customer_email == "comprador@example.com"
    assert payment.metadata["edition"] == "pro" and payment.metadata["seats"] == "2"
    assert payment.metadata["rfc"] == "XAXX010101000"
    assert payment.metadata["locale"] == "en"
    follow_ups = await db.fetch(
        "SELECT actor, args FROM outbox WHERE queue IN ('licenses', 'stamping') ORDER BY actor"
    )
    assert [(row["actor"], row["args"]) for row in follow_ups] == [
        ("deliver_license", [payment.id]),
        ("stamp_invoice", [payment.id]),
    ]
    page = await shop.get(f"/checkout/success?order={order.id}")
    assert "<strong>paid</strong>" in await page.text()


async def test_what_the_provider_echoes_never_reaches_the_follow_ups(shop, db) -> None:
    order = await _order(shop, db)
    update = _session_event(
        str(order.id),
        amount=150_000,
        email="attacker@example.com",
        product="other-product",
        edition="enterprise",
        seats="1000",
        rfc="XEXX010101000",
        fiscal_name="Someone",
    )
    outcome, actors = await _apply(db, update)
    assert outcome == "applied: approved"
    assert actors == ["deliver_license"]  # no invoice: the order has no fiscal data
    payment = await payments.get_by_provider_id(db, "stripe", update.provider_payment_id)
    assert payment is not None
    assert payment.customer_email == "comprador@example.com"
    assert payment.product_ref == "smartcompute"
    assert (payment.metadata["edition"], payment.metadata["seats"]) == ("pro", "2")
    assert "rfc" not in payment.metadata and "fiscal_name" not in payment.metadata


@pytest.mark.parametrize(
    ("amount", "currency", "reason"),
    [
        (100, "mxn", "paid 1.00 MXN, the order is 1,500.00 MXN"),
        (150_001, "mxn", "paid 1,500.01 MXN, the order is 1,500.00 MXN"),
        (150_000, "usd", "paid 1,500.00 USD, the order is 1,500.00 MXN"),
    ],
)
async def test_a_payment_that_does_not_match_is_held_and_nothing_follows(
    shop, db, amount, currency, reason
) -> None:
    order = await _order(shop, db, fiscal=FISCAL)
    outcome, actors = await _apply(
        db, _session_event(str(order.id), amount=amount, currency=currency)
    )
    assert outcome == "applied: approved; its order is not fulfilled"
    assert actors == []
    held = await orders.get(db, order.id)
    assert held is not None
    assert (held.status, held.status_reason) == ("held", reason)
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE queue <> 'payments'") == 0


async def test_a_second_payment_of_a_paid_order_delivers_nothing_more(shop, db) -> None:
    order = await _order(shop, db)
    assert (await _apply(db, _session_event(str(order.id), amount=150_000)))[1] == [
        "deliver_license"
    ]
    outcome, actors = await _apply(db, _session_event(str(order.id), amount=150_000))
    assert actors == []
    paid = await orders.get(db, order.id)
    assert paid is not None and paid.status == "paid"


async def test_a_rejection_fails_the_order_and_a_later_approval_pays_it(shop, db) -> None:
    order = await _order(shop, db)
    intent_id = sample_events.new_id("pi")

    def intent_event(status: str) -> PaymentUpdate:
        kind = (
            "payment_intent.succeeded" if status == "succeeded" else "payment_intent.payment_failed"
        )
        intent = sample_events.payment_intent(
            payment_intent_id=intent_id,
            amount=150_000,
            status=status,
            metadata={"order_id": str(order.id)},
        )
        update = interpret_stripe(sample_events.stripe_event(kind, intent))
        assert isinstance(update, PaymentUpdate)
        return update

    await _apply(db, intent_event("requires_payment_method"))
    failed = await orders.get(db, order.id)
    assert failed is not None and failed.status == "failed"
    assert (await _apply(db, intent_event("succeeded")))[1] == ["deliver_license"]
    paid = await orders.get(db, order.id)
    assert paid is not None and paid.status == "paid"


async def test_a_payment_naming_no_order_settles_as_before(db) -> None:
    update = _session_event(str(uuid.uuid4()), amount=150_000, product="x", product_kind="license")
    outcome, actors = await _apply(db, update)
    assert (outcome, actors) == ("applied: approved", ["deliver_license"])
    payment = await payments.get_by_provider_id(db, "stripe", update.provider_payment_id)
    assert payment is not None and payment.product_ref == "x"


async def test_unpaid_orders_expire_and_a_late_payment_still_settles_one(
    shop, db, shop_settings
) -> None:
    stale, fresh = await _order(shop, db), await _order(shop, db)
    await db.execute(
        "UPDATE orders SET created_at = now() - interval '25 hours' WHERE id = $1", stale.id
    )
    resources = resources_for(shop_settings)
    await resources.start()
    try:
        assert await expire_orders(resources) == 1
        assert await expire_orders(resources) == 0
    finally:
        await resources.close()
    expired, waiting = await orders.get(db, stale.id), await orders.get(db, fresh.id)
    assert expired is not None and (expired.status, expired.status_reason) == (
        "expired",
        "not paid in time",
    )
    assert waiting is not None and waiting.status == "open"
    page = await shop.get(f"/checkout/pending?order={stale.id}", headers={"Accept-Language": "en"})
    assert "<strong>expired</strong>" in await page.text()

    # The buyer paid at the last moment and the webhook came late: the money is honoured.
    outcome, follow_ups = await _apply(
        db, _session_event(str(stale.id), amount=to_minor(stale.amount, stale.currency))
    )
    late = await orders.get(db, stale.id)
    assert late is not None and late.status == "paid"
    assert "deliver_license" in follow_ups
