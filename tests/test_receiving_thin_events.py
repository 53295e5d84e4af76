"""Stripe thin events (event destinations' `v2.core.event`): verified like any Stripe event,
stored once, and acted on only after the related object is fetched through the API with the
official library (against a local stand-in of Stripe's API)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from colmena.gateways import sample_events as events
from colmena.gateways.stripe import sign
from tests.conftest import queue_counts, wait_for
from tests.payments_support import LICENSE_METADATA, STRIPE_SECRET, follow_ups, payment_status
from tests.standins.stripe_events_api import StripeEventsStandin

API_KEY = "sk_test_colmena_receiving"


@pytest.fixture
async def stripe_api():
    standin = StripeEventsStandin(API_KEY)
    await standin.start()
    yield standin
    await standin.stop()


@pytest.fixture
def thin_settings(settings, stripe_api):
    return settings.model_copy(
        update={
            "stripe_webhook_secrets": SecretStr(STRIPE_SECRET),
            "stripe_secret_key": SecretStr(API_KEY),
            "stripe_api_url": stripe_api.url,
            "stripe_timeout_s": 2.0,
        }
    )


@pytest.fixture
async def system(thin_settings, start_worker, make_client):
    start_worker(settings_override=thin_settings, queues=["payments"])
    return await make_client(thin_settings)


def thin_event(kind: str, related: dict[str, Any] | None, url: str | None = None) -> dict:
    """A thin event as an event destination sends it (Stripe's documented v2 envelope)."""
    event: dict[str, Any] = {
        "id": events.new_id("evt_test"),
        "object": "v2.core.event",
        "type": kind,
        "livemode": False,
        "created": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "reason": {
            "type": "request",
            "request": {"id": events.new_id("req"), "idempotency_key": events.new_id("ik")},
        },
    }
    if related is not None:
        event["related_object"] = {"id": related["id"], "type": related["object"], "url": url}
    return event


async def post(client, event: dict, *, secret: str = STRIPE_SECRET):
    body = json.dumps(event)
    return await client.post(
        "/webhooks/stripe",
        data=body.encode(),
        headers={"Content-Type": "application/json", "Stripe-Signature": sign(body, secret)},
    )


async def processed(db) -> bool:
    return await db.fetchval("SELECT count(*) FROM inbox WHERE processed_at IS NOT NULL") >= 1


async def test_thin_event_is_stored_then_settled_from_the_fetched_object(
    system, db, stripe_api, thin_settings
) -> None:
    intent = events.payment_intent(metadata=LICENSE_METADATA, amount=129_900)
    url = stripe_api.put(intent)
    event = thin_event("v1.payment_intent.succeeded", intent, url)
    response = await post(system, event)
    assert response.status == 200, await response.text()
    assert await response.json() == {"received": True, "duplicate": False}
    again = await post(system, event)
    assert await again.json() == {"received": True, "duplicate": True}
    await wait_for(lambda: processed(db))
    assert stripe_api.requests == [url]
    payment = await db.fetchrow("SELECT * FROM payments")
    assert (payment["provider_payment_id"], payment["status"], payment["amount_minor"]) == (
        intent["id"],
        "approved",
        129_900,
    )
    assert await follow_ups(db) == [("licenses", "deliver_license"), ("stamping", "stamp_invoice")]
    row = await db.fetchrow("SELECT kind, outcome FROM inbox")
    assert (row["kind"], row["outcome"]) == ("v1.payment_intent.succeeded", "applied: approved")


async def test_thin_payment_failed_rejects_and_an_api_outage_is_retried(
    system, db, stripe_api
) -> None:
    intent = events.payment_intent(status="requires_payment_method")
    url = stripe_api.put(intent)
    stripe_api.fail_next = 1
    assert (
        await post(system, thin_event("v1.payment_intent.payment_failed", intent, url))
    ).status == 200
    await wait_for(lambda: processed(db), timeout=30)
    assert stripe_api.requests == [url, url]
    assert await payment_status(db, "stripe", intent["id"]) == "rejected"


async def test_thin_event_colmena_does_not_act_on_costs_no_api_call(system, db, stripe_api) -> None:
    customer = {"id": "cus_1", "object": "customer"}
    await post(system, thin_event("v1.customer.created", customer, "/v1/customers/cus_1"))
    await post(system, thin_event("v2.core.account.updated", None))
    await wait_for(
        lambda: db.fetchval("SELECT count(*) = 2 FROM inbox WHERE processed_at IS NOT NULL")
    )
    assert stripe_api.requests == []
    outcomes = {row["outcome"] for row in await db.fetch("SELECT outcome FROM inbox")}
    assert all(outcome.startswith("ignored: thin event type") for outcome in outcomes), outcomes
    assert await db.fetchval("SELECT count(*) FROM payments") == 0


async def test_thin_event_whose_object_is_unknown_goes_to_dead_letters(
    system, db, stripe_api, thin_settings
) -> None:
    intent = events.payment_intent()
    response = await post(
        system,
        thin_event("v1.payment_intent.succeeded", intent, f"/v1/payment_intents/{intent['id']}"),
    )
    assert response.status == 200
    await wait_for(
        lambda: asyncio.to_thread(
            lambda: queue_counts(thin_settings.queue_prefix + "payments")[2] == 1
        )
    )
    assert await db.fetchval("SELECT processed_at FROM inbox") is None
    assert await db.fetchval("SELECT count(*) FROM payments") == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"created": "yesterday"}, "thin event has no created time"),
        ({"related_object": {"id": "pi_1", "type": "payment_intent"}}, "unusable related_object"),
        (
            {"related_object": {"id": "pi_1", "type": "x", "url": "https://evil.example/v1"}},
            "unusable",
        ),
        ({"id": "not-an-event"}, "event has no valid id"),
    ],
)
async def test_malformed_thin_events_are_refused_and_store_nothing(
    make_client, thin_settings, db, change, message
) -> None:
    client = await make_client(thin_settings)
    intent = events.payment_intent()
    event = thin_event("v1.payment_intent.succeeded", intent, "/v1/payment_intents/pi_1") | change
    response = await post(client, event)
    assert response.status == 400
    assert message in (await response.json())["error"]["message"]
    assert await db.fetchval("SELECT count(*) FROM inbox") == 0


async def test_thin_event_signed_with_another_secret_is_refused(
    make_client, thin_settings, db
) -> None:
    client = await make_client(thin_settings)
    event = thin_event("v1.payment_intent.succeeded", events.payment_intent(), "/v1/x")
    response = await post(client, event, secret="whsec_someone_else")
    assert response.status == 401
    assert await db.fetchval("SELECT count(*) FROM inbox") == 0
