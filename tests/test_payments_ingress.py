"""Webhook ingress on real PostgreSQL/RabbitMQ: verified events stored once, bad ones refused."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from bench.standins.tcp_proxy import TcpProxy
from colmena.gateways import sample_events as events
from colmena.gateways.stripe import sign
from tests.payments_support import (
    MP_OLD_SECRET,
    MP_SECRET,
    STRIPE_OLD_SECRET,
    STRIPE_SECRET,
    mercadopago_post_args,
    stored_counts,
    stripe_post_args,
)


@pytest.fixture
def pay_settings(settings):
    return settings.model_copy(
        update={
            "stripe_webhook_secrets": SecretStr(f"{STRIPE_SECRET},{STRIPE_OLD_SECRET}"),
            "mercadopago_webhook_secret": SecretStr(f"{MP_SECRET},{MP_OLD_SECRET}"),
        }
    )


@pytest.fixture
async def pay_client(make_client, pay_settings):
    return await make_client(pay_settings)


def webhook_count(provider: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "colmena_webhooks_total", {"provider": provider, "outcome": outcome}
        )
        or 0.0
    )


async def test_verified_stripe_event_is_stored_with_its_message(pay_client, db) -> None:
    event = events.stripe_event("payment_intent.succeeded", events.payment_intent())
    response = await pay_client.post("/webhooks/stripe", **stripe_post_args(event))
    assert response.status == 200
    assert await response.json() == {"received": True, "duplicate": False}
    row = await db.fetchrow("SELECT provider, event_key, kind FROM inbox")
    assert dict(row) == {
        "provider": "stripe",
        "event_key": event["id"],
        "kind": "payment_intent.succeeded",
    }
    message = await db.fetchrow("SELECT queue, actor, args FROM outbox")
    assert (message["queue"], message["actor"]) == ("payments", "settle_stripe_event")


async def test_event_signed_with_the_previous_secret_is_accepted_during_a_roll(
    pay_client, db
) -> None:
    event = events.stripe_event("payment_intent.succeeded", events.payment_intent())
    response = await pay_client.post(
        "/webhooks/stripe", **stripe_post_args(event, secret=STRIPE_OLD_SECRET)
    )
    assert response.status == 200


async def test_same_webhook_five_times_concurrently_is_stored_once(pay_client, db) -> None:
    event = events.stripe_event("payment_intent.succeeded", events.payment_intent())
    args = stripe_post_args(event)
    responses = await asyncio.gather(
        *(pay_client.post("/webhooks/stripe", **args) for _ in range(5))
    )
    bodies = [await response.json() for response in responses]
    assert [response.status for response in responses] == [200] * 5
    assert sorted(body["duplicate"] for body in bodies) == [False, True, True, True, True]
    assert await stored_counts(db) == (1, 1, 0)


async def test_mercadopago_notification_is_stored(pay_client, db) -> None:
    notification = events.mercadopago_notification("1319000001")
    args = mercadopago_post_args(notification)
    response = await pay_client.post("/webhooks/mercadopago", **args)
    assert response.status == 200, await response.text()
    row = await db.fetchrow("SELECT provider, event_key, kind FROM inbox")
    ts = args["headers"]["x-signature"].split(",")[0].removeprefix("ts=")
    assert dict(row) == {  # keyed by what the signature covers, not by the body's own id
        "provider": "mercadopago",
        "event_key": f"id:1319000001;request-id:{args['headers']['x-request-id']};ts:{ts};",
        "kind": "payment",
    }


async def test_mercadopago_notification_signed_with_the_previous_secret_is_accepted(
    pay_client,
) -> None:
    notification = events.mercadopago_notification("1319000004")
    args = mercadopago_post_args(notification, secret=MP_OLD_SECRET)
    assert (await pay_client.post("/webhooks/mercadopago", **args)).status == 200


async def test_mercadopago_millisecond_timestamp_is_accepted(pay_client) -> None:
    notification = events.mercadopago_notification("1319000002")
    args = mercadopago_post_args(notification, ts=int(time.time() * 1000))
    assert (await pay_client.post("/webhooks/mercadopago", **args)).status == 200


def _stripe_bad_requests() -> dict[str, tuple[int, str, dict]]:
    event = events.stripe_event("payment_intent.succeeded", events.payment_intent())
    good = stripe_post_args(event)
    forged = stripe_post_args(event, secret="whsec_attacker")
    stale = stripe_post_args(event, timestamp=int(time.time()) - 400)
    missing = {"data": good["data"], "headers": {"Content-Type": "application/json"}}
    malformed_body = b"{not json"
    malformed = {
        "data": malformed_body,
        "headers": {
            "Content-Type": "application/json",
            "Stripe-Signature": sign(malformed_body.decode(), STRIPE_SECRET),
        },
    }
    not_an_event = {
        "data": b'{"hello": 1}',
        "headers": {
            "Content-Type": "application/json",
            "Stripe-Signature": sign('{"hello": 1}', STRIPE_SECRET),
        },
    }
    wrong_type = {
        "data": good["data"],
        "headers": {**good["headers"], "Content-Type": "text/plain"},
    }
    tampered = {
        "data": good["data"].replace(b"succeeded", b"SUCCEEDED"),
        "headers": good["headers"],
    }
    return {
        "forged signature": (401, "invalid_signature", forged),
        "stale timestamp (over 300 s)": (401, "invalid_signature", stale),
        "missing header": (401, "invalid_signature", missing),
        "tampered body": (401, "invalid_signature", tampered),
        "malformed JSON": (400, "malformed", malformed),
        "not an event": (400, "malformed", not_an_event),
        "wrong content type": (415, "unsupported_media_type", wrong_type),
    }


@pytest.mark.parametrize("case", list(_stripe_bad_requests()))
async def test_bad_stripe_requests_are_refused_and_change_nothing(case, pay_client, db) -> None:
    status, outcome, args = _stripe_bad_requests()[case]
    before = webhook_count("stripe", outcome)
    response = await pay_client.post("/webhooks/stripe", **args)
    assert response.status == status
    assert (await response.json())["error"]["code"] == outcome
    assert await stored_counts(db) == (0, 0, 0)
    assert webhook_count("stripe", outcome) == before + 1


def _mercadopago_bad_requests() -> dict[str, tuple[int, str, dict]]:
    notification = events.mercadopago_notification("1319000003")
    good = mercadopago_post_args(notification)
    wrong_secret = mercadopago_post_args(notification, secret="not-ours")
    stale = mercadopago_post_args(notification, ts=int(time.time()) - 4000)
    missing = {**good, "headers": {"Content-Type": "application/json"}}
    other_query = mercadopago_post_args(notification, query_id="999")
    malformed = {**good, "data": b"[1, 2"}
    wrong_type = {
        **good,
        "headers": {**good["headers"], "Content-Type": "application/x-www-form-urlencoded"},
    }
    return {
        "wrong secret": (401, "invalid_signature", wrong_secret),
        "stale timestamp": (401, "invalid_signature", stale),
        "missing headers": (401, "invalid_signature", missing),
        "data.id in body differs from query": (400, "data_id_mismatch", other_query),
        "malformed JSON": (400, "malformed", malformed),
        "wrong content type": (415, "unsupported_media_type", wrong_type),
    }


@pytest.mark.parametrize("case", list(_mercadopago_bad_requests()))
async def test_bad_mercadopago_requests_are_refused_and_change_nothing(
    case, pay_client, db
) -> None:
    status, outcome, args = _mercadopago_bad_requests()[case]
    before = webhook_count("mercadopago", outcome)
    response = await pay_client.post("/webhooks/mercadopago", **args)
    assert response.status == status
    assert (await response.json())["error"]["code"] == outcome
    assert await stored_counts(db) == (0, 0, 0)
    assert webhook_count("mercadopago", outcome) == before + 1


async def test_oversized_webhook_is_413_and_stores_nothing(pay_client, pay_settings, db) -> None:
    event = events.stripe_event(
        "payment_intent.succeeded", events.payment_intent(metadata={"pad": "x" * 400})
    )
    event["data"]["object"]["padding"] = "x" * pay_settings.max_body_bytes
    response = await pay_client.post("/webhooks/stripe", **stripe_post_args(event))
    assert response.status == 413
    assert await stored_counts(db) == (0, 0, 0)


async def test_database_down_answers_503_and_rabbitmq_down_still_200(
    make_client, pay_settings, database_url, db
) -> None:
    target = urlsplit(database_url)
    proxy = TcpProxy(target.hostname, target.port)
    port = await proxy.start()
    broker_down = pay_settings.model_copy(
        update={"broker_url": SecretStr("amqp://guest:guest@127.0.0.1:1/")}
    )
    client = await make_client(
        broker_down, database_url=database_url.replace(f":{target.port}/", f":{port}/")
    )

    event = events.stripe_event("payment_intent.succeeded", events.payment_intent())
    accepted = await client.post("/webhooks/stripe", **stripe_post_args(event))
    assert accepted.status == 200
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 1

    await proxy.cut()
    refused_event = events.stripe_event("payment_intent.succeeded", events.payment_intent())
    refused = await client.post("/webhooks/stripe", **stripe_post_args(refused_event))
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "30"
    assert (await refused.json())["error"]["code"] == "unavailable"
    assert (
        await db.fetchval("SELECT count(*) FROM inbox WHERE event_key = $1", refused_event["id"])
        == 0
    )
    await proxy.restore()
