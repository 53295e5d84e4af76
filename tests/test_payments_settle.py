"""Webhook to settled payment, end to end on real RabbitMQ and PostgreSQL, exactly once."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import SecretStr

from colmena.gateways import sample_events as events
from tests.conftest import queue_counts, wait_for
from tests.payments_support import (
    LICENSE_METADATA,
    MP_SECRET,
    MP_TOKEN,
    STRIPE_SECRET,
    follow_ups,
    mercadopago_post_args,
    payment_status,
    stripe_post_args,
)
from tests.standins.mercadopago import MercadoPagoStandin, payment_object


@pytest.fixture
async def mp_api():
    standin = MercadoPagoStandin(MP_TOKEN)
    await standin.start()
    yield standin
    await standin.stop()


@pytest.fixture
def pay_settings(settings, mp_api):
    return settings.model_copy(
        update={
            "stripe_webhook_secrets": SecretStr(STRIPE_SECRET),
            "mercadopago_webhook_secret": SecretStr(MP_SECRET),
            "mercadopago_access_token": SecretStr(MP_TOKEN),
            "mercadopago_api_url": mp_api.url,
            "mercadopago_timeout_s": 2.0,
        }
    )


@pytest.fixture
async def system(pay_settings, start_worker, make_client):
    start_worker(settings_override=pay_settings, queues=["payments"])
    return await make_client(pay_settings)


async def post_stripe(client, event) -> None:
    response = await client.post("/webhooks/stripe", **stripe_post_args(event))
    assert response.status == 200, await response.text()


async def processed(db, count: int = 1) -> bool:
    return await db.fetchval("SELECT count(*) FROM inbox WHERE processed_at IS NOT NULL") >= count


async def test_stripe_payment_is_approved_once_with_its_follow_ups_published(
    system, db, pay_settings
) -> None:
    intent = events.payment_intent(metadata=LICENSE_METADATA, amount=129_900, currency="mxn")
    await post_stripe(system, events.stripe_event("payment_intent.succeeded", intent))
    await wait_for(lambda: processed(db))
    payment = await db.fetchrow("SELECT * FROM payments")
    assert (payment["status"], payment["amount_minor"], payment["currency"]) == (
        "approved",
        129_900,
        "MXN",
    )
    assert payment["customer_email"] == "cliente@example.com"
    assert payment["product_kind"] == "license"
    assert await follow_ups(db) == [("licenses", "deliver_license"), ("stamping", "stamp_invoice")]
    await wait_for(
        lambda: db.fetchval("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL")
    )
    prefix = pay_settings.queue_prefix
    assert queue_counts(prefix + "licenses")[0] == 1
    assert queue_counts(prefix + "stamping")[0] == 1


async def test_checkout_and_intent_events_for_one_payment_settle_it_once(system, db) -> None:
    intent = events.payment_intent(metadata=LICENSE_METADATA)
    session = events.checkout_session(payment_intent_id=intent["id"], metadata=LICENSE_METADATA)
    await asyncio.gather(
        post_stripe(system, events.stripe_event("checkout.session.completed", session)),
        post_stripe(system, events.stripe_event("payment_intent.succeeded", intent)),
    )
    await wait_for(lambda: processed(db, 2))
    assert await db.fetchval("SELECT count(*) FROM payments") == 1
    assert await payment_status(db, "stripe", intent["id"]) == "approved"
    assert await follow_ups(db) == [("licenses", "deliver_license"), ("stamping", "stamp_invoice")]


async def test_unpaid_checkout_session_fulfils_nothing(system, db) -> None:
    session = events.checkout_session(
        payment_intent_id=events.new_id("pi"), payment_status="unpaid", metadata=LICENSE_METADATA
    )
    await post_stripe(system, events.stripe_event("checkout.session.completed", session))
    await wait_for(lambda: processed(db))
    assert await payment_status(db, "stripe", session["payment_intent"]) == "pending"
    assert await follow_ups(db) == []


async def test_refund_arriving_before_success_leaves_it_refunded_without_license(
    system, db
) -> None:
    intent = events.payment_intent(metadata=LICENSE_METADATA)
    now = int(time.time())
    await post_stripe(
        system,
        events.stripe_event(
            "charge.refunded",
            events.charge(payment_intent_id=intent["id"], metadata=LICENSE_METADATA),
            created=now + 60,
        ),
    )
    await wait_for(lambda: processed(db))
    await post_stripe(system, events.stripe_event("payment_intent.succeeded", intent, created=now))
    await wait_for(lambda: processed(db, 2))
    assert await payment_status(db, "stripe", intent["id"]) == "refunded"
    assert await follow_ups(db) == []
    history = await db.fetch("SELECT status, applied, reason FROM payment_events ORDER BY id")
    assert [(row["status"], row["applied"]) for row in history] == [
        ("refunded", True),
        ("approved", False),
    ]
    assert history[1]["reason"].startswith("stale")


async def test_refund_after_success_revokes_the_follow_ups(system, db) -> None:
    intent = events.payment_intent(metadata=LICENSE_METADATA)
    now = int(time.time())
    await post_stripe(system, events.stripe_event("payment_intent.succeeded", intent, created=now))
    await wait_for(lambda: processed(db))
    await post_stripe(
        system,
        events.stripe_event(
            "charge.refunded", events.charge(payment_intent_id=intent["id"]), created=now + 5
        ),
    )
    await wait_for(lambda: processed(db, 2))
    assert await payment_status(db, "stripe", intent["id"]) == "refunded"
    assert await follow_ups(db) == [
        ("licenses", "deliver_license"),
        ("stamping", "stamp_invoice"),
        ("licenses", "revoke_license"),
        ("stamping", "issue_credit_note"),
    ]


async def test_subscription_invoice_activates_the_plan_and_deletion_deactivates_it(
    system, db
) -> None:
    metadata = {"tenant_id": "tenant-7", "plan": "pro"}
    subscription_id = events.new_id("sub")
    now = int(time.time())
    await post_stripe(
        system,
        events.stripe_event(
            "invoice.paid",
            events.invoice(subscription_id=subscription_id, metadata=metadata),
            created=now,
        ),
    )
    await post_stripe(
        system,
        events.stripe_event(
            "customer.subscription.deleted",
            events.subscription(
                subscription_id=subscription_id, status="canceled", metadata=metadata
            ),
            created=now + 1,
        ),
    )
    await wait_for(lambda: processed(db, 2))
    plans = sorted(
        [
            row["args"]
            for row in await db.fetch("SELECT args FROM outbox WHERE actor = 'apply_plan'")
        ],
        key=lambda args: args[4],
    )
    assert [args[:3] for args in plans] == [["tenant-7", "pro", True], ["tenant-7", "pro", False]]
    assert plans[0][3] == plans[1][3] == f"subscription:{subscription_id}"


async def test_mercadopago_notification_settles_from_the_api(system, db, mp_api) -> None:
    payment = mp_api.put(
        payment_object(status="approved", metadata=LICENSE_METADATA, currency="MXN")
    )
    notification = events.mercadopago_notification(str(payment["id"]))
    response = await system.post("/webhooks/mercadopago", **mercadopago_post_args(notification))
    assert response.status == 200
    await wait_for(lambda: processed(db))
    row = await db.fetchrow("SELECT status, amount_minor, currency, customer_email FROM payments")
    assert dict(row) == {
        "status": "approved",
        "amount_minor": 150_000,
        "currency": "MXN",
        "customer_email": "comprador@example.com",
    }
    assert await follow_ups(db) == [("licenses", "deliver_license"), ("stamping", "stamp_invoice")]


async def test_mercadopago_api_500_is_retried_then_settles(system, db, mp_api) -> None:
    payment = mp_api.put(payment_object(status="approved"))
    mp_api.fail_next = 1
    response = await system.post(
        "/webhooks/mercadopago",
        **mercadopago_post_args(events.mercadopago_notification(str(payment["id"]))),
    )
    assert response.status == 200
    await wait_for(lambda: processed(db), timeout=30)
    assert await payment_status(db, "mercadopago", str(payment["id"])) == "approved"
    assert len([path for path in mp_api.requests if path.endswith(str(payment["id"]))]) == 2


async def test_mercadopago_unknown_payment_goes_to_dead_letters(
    system, db, mp_api, pay_settings
) -> None:
    response = await system.post(
        "/webhooks/mercadopago",
        **mercadopago_post_args(events.mercadopago_notification("404404404")),
    )
    assert response.status == 200
    await wait_for(
        lambda: asyncio.to_thread(
            lambda: queue_counts(pay_settings.queue_prefix + "payments")[2] == 1
        )
    )
    assert await db.fetchval("SELECT count(*) FROM payments") == 0
    assert await db.fetchval("SELECT processed_at FROM inbox") is None
