"""Disputes end to end on real PostgreSQL and RabbitMQ: a dispute suspends the license and holds
the invoice in the transaction that records it; won restores both and resumes their follow-ups;
lost revokes and cancels like any chargeback."""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from colmena.actors.payments import apply_update
from colmena.domain.licensing import License
from colmena.domain.payment_events import interpret_mercadopago
from colmena.gateways import sample_events as events
from colmena.store import invoices, licenses, payments
from tests.conftest import wait_for
from tests.payments_support import LICENSE_METADATA, STRIPE_SECRET, payment_status, stripe_post_args
from tests.standins.mercadopago import payment_object

TOKEN = b"dispute-token-held-by-the-customer-00000000"  # 43 url-safe characters, as a link


@pytest.fixture
async def system(settings, start_worker, make_client):
    active = settings.model_copy(update={"stripe_webhook_secrets": SecretStr(STRIPE_SECRET)})
    start_worker(settings_override=active, queues=["payments"])
    return await make_client(active)


def dispute(intent: dict[str, Any], status: str) -> dict[str, Any]:
    """A Dispute object as Stripe's API reference shapes it."""
    return {
        "id": "dp_" + intent["id"][3:],
        "object": "dispute",
        "amount": intent["amount"],
        "currency": intent["currency"],
        "charge": intent["latest_charge"],
        "payment_intent": intent["id"],
        "reason": "fraudulent",
        "status": status,
        "evidence_details": {"due_by": int(time.time()) + 7 * 86400, "has_evidence": False},
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "created": int(time.time()),
    }


async def deliver(system, db, event: dict[str, Any], count: int) -> None:
    response = await system.post("/webhooks/stripe", **stripe_post_args(event))
    assert response.status == 200, await response.text()
    await wait_for(
        lambda: db.fetchval(
            "SELECT count(*) >= $1 FROM inbox WHERE processed_at IS NOT NULL", count
        )
    )


async def delivered(db, payment_id: int) -> uuid.UUID:
    """The license and invoice the approval's follow-ups would have made, with a sent link."""
    license = License(
        license_id=str(uuid.uuid4()),
        product="colmena-enterprise",
        edition="enterprise",
        customer_email="cliente@example.com",
        seats=5,
        issued_at=datetime.now(UTC).replace(microsecond=0),
    )
    issued = await licenses.issue(
        db,
        license,
        payment=await payments.get(db, payment_id),
        locale=None,
        key="k",
        package=("0" * 64, 1),
        link=licenses.LinkDraft(
            token_sha256=hashlib.sha256(TOKEN).digest(), ttl_s=3600, max_downloads=3
        ),
        lease_s=0,  # as if its worker had finished with it
    )
    await invoices.create(db, payment_id=payment_id, issuer_rfc="EKU9003173C9", series="A")
    return issued.license.id


async def paid_and_delivered(system, db) -> tuple[dict[str, Any], int, uuid.UUID, int]:
    intent = events.payment_intent(metadata=LICENSE_METADATA)
    now = int(time.time())
    await deliver(
        system, db, events.stripe_event("payment_intent.succeeded", intent, created=now), 1
    )
    payment_id = await db.fetchval("SELECT id FROM payments")
    license_id = await delivered(db, payment_id)
    return intent, payment_id, license_id, now


async def resumed(db) -> list[tuple[str, str]]:
    rows = await db.fetch("SELECT actor, dedupe_key FROM outbox WHERE dedupe_key LIKE '%restored%'")
    return sorted((row["actor"], row["dedupe_key"].split(":")[0]) for row in rows)


async def test_dispute_suspends_and_holds_then_won_restores_and_resumes(system, db) -> None:
    intent, payment_id, license_id, now = await paid_and_delivered(system, db)
    digest = hashlib.sha256(TOKEN).digest()
    created = events.stripe_event(
        "charge.dispute.created", dispute(intent, "needs_response"), created=now + 10
    )
    await deliver(system, db, created, 2)
    assert await payment_status(db, "stripe", intent["id"]) == "in_mediation"
    license = await licenses.get(db, license_id)
    assert license is not None and license.suspended_at is not None
    assert license.suspended_reason == "stripe payment disputed"
    view = await licenses.view_link(db, digest)
    assert view is not None and view.state == "suspended"
    assert await licenses.consume_link(db, digest) is None
    page = await system.get(f"/downloads/{TOKEN.decode()}")
    assert page.status == 403
    assert "This license is suspended" in await page.text()
    invoice = await invoices.get_by_payment(db, payment_id)
    assert invoice is not None and invoice.held_at is not None
    assert await resumed(db) == []

    won = events.stripe_event("charge.dispute.closed", dispute(intent, "won"), created=now + 20)
    await deliver(system, db, won, 3)
    assert await payment_status(db, "stripe", intent["id"]) == "approved"
    license = await licenses.get(db, license_id)
    assert license is not None and license.suspended_at is None
    invoice = await invoices.get_by_payment(db, payment_id)
    assert invoice is not None and invoice.held_at is None
    # The link the customer holds works again; nothing was replaced.
    assert await licenses.consume_link(db, digest) is not None
    assert await resumed(db) == [
        ("deliver_license", "deliver_license"),
        ("stamp_invoice", "stamp_invoice"),
    ]
    # First approval's follow-ups stay single: a won dispute is no second sale.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM outbox WHERE dedupe_key = $1", f"deliver_license:{payment_id}"
        )
        == 1
    )


async def test_dispute_lost_revokes_and_cancels(system, db) -> None:
    intent, payment_id, _license_id, now = await paid_and_delivered(system, db)
    for offset, kind, status in (
        (10, "charge.dispute.created", "needs_response"),
        (20, "charge.dispute.closed", "lost"),
    ):
        await deliver(
            system,
            db,
            events.stripe_event(kind, dispute(intent, status), created=now + offset),
            offset // 10 + 1,
        )
    assert await payment_status(db, "stripe", intent["id"]) == "charged_back"
    reversals = await db.fetch(
        "SELECT actor, args FROM outbox "
        "WHERE actor IN ('revoke_license', 'cancel_invoice') ORDER BY actor"
    )
    assert [(row["actor"], row["args"]) for row in reversals] == [
        ("cancel_invoice", [payment_id]),
        ("revoke_license", [payment_id]),
    ]
    assert await resumed(db) == []


async def test_a_redelivered_dispute_changes_nothing_twice(system, db) -> None:
    intent, payment_id, license_id, now = await paid_and_delivered(system, db)
    created = events.stripe_event(
        "charge.dispute.created", dispute(intent, "needs_response"), created=now + 10
    )
    await deliver(system, db, created, 2)
    first = await licenses.get(db, license_id)
    again = events.stripe_event(
        "charge.dispute.created", dispute(intent, "needs_response"), created=now + 11
    )
    await deliver(system, db, again, 3)
    second = await licenses.get(db, license_id)
    assert first is not None and second is not None and first.suspended_at == second.suspended_at
    outcome = await db.fetchval("SELECT outcome FROM inbox ORDER BY id DESC LIMIT 1")
    assert outcome == "ignored: no change"


async def test_mercadopago_mediation_suspends_too_and_never_paid_changes_nothing(db) -> None:
    metadata = {**LICENSE_METADATA}
    approved = payment_object(status="approved", metadata=metadata)
    async with db.transaction():
        await apply_update(db, interpret_mercadopago(approved), None)
    payment_id = await db.fetchval("SELECT id FROM payments")
    license_id = await delivered(db, payment_id)
    mediation = payment_object(payment_id=approved["id"], status="in_mediation", metadata=metadata)
    async with db.transaction():
        outcome, rows = await apply_update(db, interpret_mercadopago(mediation), None)
    assert (outcome, rows) == ("applied: in_mediation", [])
    license = await licenses.get(db, license_id)
    assert license is not None and license.suspended_reason == "mercadopago payment disputed"

    unpaid = payment_object(status="in_mediation", metadata=metadata)
    async with db.transaction():
        outcome, rows = await apply_update(db, interpret_mercadopago(unpaid), None)
    assert (outcome, rows) == ("applied: in_mediation", [])
    assert await db.fetchval("SELECT count(*) FROM invoices WHERE held_at IS NOT NULL") == 1
