"""Bitso deliveries settled by a real worker: the intent's transitions, SPEI deposits, and the
order each one names. Ingress, RabbitMQ and PostgreSQL are real; deliveries are signed with a
test key as Bitso signs them."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import pytest

from colmena.gateways import sample_events as events
from tests.conftest import queue_counts, wait_for
from tests.payments_support import follow_ups, payment_status
from tests.test_bitso_webhooks import KEY_ID, bitso_post_args, stand_in_keys, with_bitso_keys

PRODUCT = "colmena-enterprise"


async def bitso_order(db, *, amount: str = "1500.00", provider: str = "bitso") -> uuid.UUID:
    """An open order of a license product, as the checkout stores it before calling Bitso."""
    await db.execute(
        "INSERT INTO products (ref, kind, name, package_dir, editions, max_seats) "
        "VALUES ($1, 'license', 'Colmena Enterprise', $1, '{enterprise}', 50) "
        "ON CONFLICT (ref) DO NOTHING",
        PRODUCT,
    )
    price_id = await db.fetchval(
        "SELECT id FROM prices WHERE product_ref = $1 AND currency = 'MXN' AND archived_at IS NULL",
        PRODUCT,
    ) or await db.fetchval(
        "INSERT INTO prices (product_ref, edition, currency, amount) "
        "VALUES ($1, 'enterprise', 'MXN', 1500) RETURNING id",
        PRODUCT,
    )
    order_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO orders (id, product_ref, price_id, edition, seats, currency, amount, "
        "buyer_email, buyer_locale, provider, status) "
        "VALUES ($1, $2, $3, 'enterprise', 5, 'MXN', $4, 'cliente@example.com', 'es-MX', $5, "
        "'open')",
        order_id,
        PRODUCT,
        price_id,
        Decimal(amount),
        provider,
    )
    return order_id


@pytest.fixture
async def bitso_system(settings, start_worker, make_client):
    """The ingress and a worker on the payments queue; returns a function that posts a
    signed delivery and asserts it was accepted."""
    keys = stand_in_keys()
    active = with_bitso_keys(settings, keys)
    start_worker(settings_override=active, queues=["payments"])
    client = await make_client(active)

    async def deliver(body) -> None:
        response = await client.post("/webhooks/bitso", **bitso_post_args(body, keys[KEY_ID]))
        assert response.status == 200, await response.text()

    return deliver


async def processed(db, count: int) -> bool:
    return await db.fetchval("SELECT count(*) FROM inbox WHERE processed_at IS NOT NULL") >= count


async def order_state(db, order_id: uuid.UUID) -> tuple[str, str | None]:
    row = await db.fetchrow("SELECT status, status_reason FROM orders WHERE id = $1", order_id)
    return row["status"], row["status_reason"]


async def test_completed_intent_approves_and_pays_its_order(bitso_system, db) -> None:
    order_id = await bitso_order(db)
    body = events.bitso_payment_intent(status="COMPLETED", external_ref=str(order_id))
    await bitso_system(body)
    intent = body["payload"]["id"]
    await wait_for(lambda: payment_status(db, "bitso", intent))
    payment = await db.fetchrow(
        "SELECT status, amount_minor, currency, order_id, customer_email, product_kind "
        "FROM payments WHERE provider_payment_id = $1",
        intent,
    )
    assert dict(payment) == {
        "status": "approved",
        "amount_minor": 150_000,
        "currency": "MXN",
        "order_id": order_id,
        "customer_email": "cliente@example.com",
        "product_kind": "license",
    }
    assert await order_state(db, order_id) == ("paid", None)
    assert ("licenses", "deliver_license") in await follow_ups(db)


async def test_completed_for_another_amount_holds_the_order(bitso_system, db) -> None:
    order_id = await bitso_order(db)
    body = events.bitso_payment_intent(status="COMPLETED", amount=15.0, external_ref=str(order_id))
    await bitso_system(body)
    await wait_for(lambda: processed(db, 1))
    status, reason = await order_state(db, order_id)
    assert status == "held"
    assert reason is not None and "15.00 MXN" in reason
    assert await follow_ups(db) == []


@pytest.mark.parametrize(
    ("bitso_status", "payment"), [("FAILED", "rejected"), ("EXPIRED", "cancelled")]
)
async def test_failed_and_expired_reject_the_order(bitso_system, db, bitso_status, payment) -> None:
    order_id = await bitso_order(db)
    body = events.bitso_payment_intent(status=bitso_status, external_ref=str(order_id))
    await bitso_system(body)
    await wait_for(lambda: payment_status(db, "bitso", body["payload"]["id"]))
    assert await payment_status(db, "bitso", body["payload"]["id"]) == payment
    assert (await order_state(db, order_id))[0] == "failed"
    assert await follow_ups(db) == []


@pytest.mark.parametrize(
    ("completed_after_s", "reason"),
    [
        (30, "transition cancelled -> approved is not allowed"),
        (-30, "stale: provider time "),
    ],
)
async def test_a_late_completed_after_expired_does_not_resurrect(
    bitso_system, db, completed_after_s, reason
) -> None:
    order_id = await bitso_order(db)
    intent = str(uuid.uuid4())
    expired_at = time.time() - 60

    async def deliver(status: str, at: float, count: int) -> None:
        await bitso_system(
            events.bitso_payment_intent(
                intent_id=intent, status=status, updated=at, external_ref=str(order_id)
            )
        )
        await wait_for(lambda: processed(db, count))

    await deliver("PROCESSING", expired_at - 60, 1)
    await deliver("EXPIRED", expired_at, 2)
    await deliver("COMPLETED", expired_at + completed_after_s, 3)
    assert await payment_status(db, "bitso", intent) == "cancelled"
    history = await db.fetch(
        "SELECT e.status, e.applied, e.reason FROM payment_events e "
        "JOIN payments p ON p.id = e.payment_id WHERE p.provider_payment_id = $1 ORDER BY e.id",
        intent,
    )
    assert [(row["status"], row["applied"]) for row in history] == [
        ("in_process", True),
        ("cancelled", True),
        ("approved", False),
    ]
    assert history[2]["reason"].startswith(reason)
    assert (await order_state(db, order_id))[0] == "failed"
    assert await follow_ups(db) == []


async def test_spei_funding_with_the_order_reference_pays_the_order(bitso_system, db) -> None:
    order_id = await bitso_order(db)
    pending = events.bitso_funding(status="pending", concepto=f"PEDIDO {order_id}")
    fid = pending["payload"]["fid"]
    await bitso_system(pending)
    await bitso_system(
        events.bitso_funding(fid=fid, status="complete", concepto=f"PEDIDO {order_id}")
    )
    await wait_for(lambda: processed(db, 2))
    assert await payment_status(db, "bitso", fid) == "approved"
    assert await order_state(db, order_id) == ("paid", None)
    assert ("licenses", "deliver_license") in await follow_ups(db)


@pytest.mark.parametrize("reference", ["none", "unknown order", "not a Bitso order"])
async def test_spei_funding_without_a_matching_order_is_recorded_and_ignored(
    bitso_system, db, reference
) -> None:
    concepts = {
        "none": "PAGO FACTURA 123",
        "unknown order": f"PEDIDO {uuid.uuid4()}",
        "not a Bitso order": f"PEDIDO {await bitso_order(db, provider='stripe')}",
    }
    await bitso_system(events.bitso_funding(status="complete", concepto=concepts[reference]))
    await wait_for(lambda: processed(db, 1))
    outcome = await db.fetchval("SELECT outcome FROM inbox")
    if reference == "none":
        assert outcome == "ignored: funding names no order reference"
    else:
        assert outcome.startswith("ignored: funding reference ")
        assert outcome.endswith(" matches no Bitso order")
    assert await db.fetchval("SELECT count(*) FROM payments") == 0
    assert await db.fetchval("SELECT count(*) FROM orders WHERE status = 'paid'") == 0


async def test_an_unreadable_event_dead_letters_at_once(bitso_system, settings, db) -> None:
    body = events.bitso_payment_intent(status="COMPLETED")
    body["payload"]["amount"] = "mil pesos"  # signed, so stored; the actor cannot read it
    await bitso_system(body)

    async def dead_lettered() -> bool:
        counts = await asyncio.to_thread(queue_counts, settings.queue_prefix + "payments")
        return counts[2] == 1

    await wait_for(dead_lettered)
    assert await db.fetchval("SELECT processed_at FROM inbox") is None
    assert await db.fetchval("SELECT count(*) FROM payments") == 0
