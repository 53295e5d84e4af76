"""POST /api/v1/checkout with Bitso: a Pay with Bitso payment intent, signed as Bitso's API
wants, against a stand-in that checks the signature; down and back; and the signed COMPLETED
event settling the order through /webhooks/bitso and the worker."""

from __future__ import annotations

import json
import uuid

import aiohttp
import pytest
from pydantic import SecretStr

from colmena.gateways import bitso
from colmena.store import orders
from tests.conftest import wait_for
from tests.standins.bitso_api import API_KEY, API_SECRET, BitsoApi
from tests.test_checkout import BODY, ROUTE, seed_catalog

BITSO_BODY = BODY | {"provider": "bitso"}


@pytest.fixture
async def bitso_api():
    api = BitsoApi()
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
def bitso_settings(settings, bitso_api):
    return settings.model_copy(
        update={
            "bitso_api_key": SecretStr(API_KEY),
            "bitso_api_secret": SecretStr(API_SECRET),
            "bitso_api_url": bitso_api.url,
            "bitso_webhook_public_keys": bitso_api.public_keys(),
        }
    )


@pytest.fixture
async def shop(db, make_client, bitso_settings):
    await seed_catalog(db)
    return await make_client(bitso_settings)


async def test_a_signed_payment_intent_is_made_from_the_order(shop, db, bitso_api) -> None:
    response = await shop.post(ROUTE, json=BITSO_BODY, headers={"Idempotency-Key": "b-1"})
    answer = await response.json()
    assert response.status == 201, answer
    order = await orders.get(db, uuid.UUID(answer["order_id"]))
    assert order is not None and order.status == "open"
    intent = bitso_api.account.intents[order.provider_ref or ""]
    assert answer["redirect_url"] == intent["pay_with_bitso"]["universal_link"]
    (call,) = bitso_api.calls(bitso.INTENTS_PATH)
    sent = json.loads(call.body)
    assert sent == {
        "amount": "1500.00",
        "asset": "MXN",
        "external_ref": str(order.id),
        "type": "pay_with_bitso",
        "pay_with_bitso": {
            "success_redirect_url": sent["pay_with_bitso"]["success_redirect_url"],
            "error_redirect_url": sent["pay_with_bitso"]["error_redirect_url"],
            "duration": "PT1H",
        },
    }
    assert sent["pay_with_bitso"]["success_redirect_url"].endswith(f"success?order={order.id}")
    assert call.headers["Authorization"].startswith(f"Bitso {API_KEY}:")
    assert call.headers[bitso.IDEMPOTENCY_HEADER] == "b-1"


async def test_a_bad_signature_is_refused_by_bitso_and_nothing_opens(shop, db, bitso_api) -> None:
    bitso_api.account.api_secret = "another-secret"
    response = await shop.post(ROUTE, json=BITSO_BODY)
    assert response.status == 502
    order_id = (await response.json())["error"]["order_id"]
    kept = await orders.get(db, uuid.UUID(order_id))
    assert kept is not None and kept.status == "pending_provider"


async def test_bitso_down_is_503_and_the_retry_works(shop, db, bitso_api) -> None:
    headers = {"Idempotency-Key": "b-down"}
    await bitso_api.go_down()
    refused = await shop.post(ROUTE, json=BITSO_BODY, headers=headers)
    assert refused.status == 503
    order_id = (await refused.json())["error"]["order_id"]
    await bitso_api.come_back()
    retried = await shop.post(ROUTE, json=BITSO_BODY, headers=headers)
    assert retried.status == 201
    assert (await retried.json())["order_id"] == order_id
    assert await orders.count(db) == 1


async def test_the_completed_intent_settles_the_order(
    shop, db, bitso_api, start_worker, bitso_settings
) -> None:
    response = await shop.post(ROUTE, json=BITSO_BODY)
    answer = await response.json()
    assert response.status == 201, answer
    bitso_api.account.webhook_url = str(shop.make_url("/webhooks/bitso"))
    start_worker(settings_override=bitso_settings, queues=["payments"])
    async with aiohttp.ClientSession() as http:
        paid = await http.post(f"{answer['redirect_url']}/pay", allow_redirects=False)
    assert paid.status == 303, await paid.text()

    async def settled():
        order = await orders.get(db, uuid.UUID(answer["order_id"]))
        return order if order is not None and order.status == "paid" else None

    order = await wait_for(settled, timeout=30)
    assert order.payment_id is not None
    row = await db.fetchrow(
        "SELECT provider, amount_minor, order_id FROM payments WHERE id = $1", order.payment_id
    )
    assert dict(row) == {"provider": "bitso", "amount_minor": 150_000, "order_id": order.id}
