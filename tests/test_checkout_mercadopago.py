"""POST /api/v1/checkout with Mercado Pago: a Checkout Pro preference through the official SDK
against a stand-in speaking the preferences API, and the whole way back: the buyer pays, the
signed notification arrives, the worker fetches the payment and settles the order."""

from __future__ import annotations

import json
import uuid

import aiohttp
import pytest
from pydantic import SecretStr

from colmena.store import orders, payments
from tests.conftest import wait_for
from tests.standins.mercadopago_api import ACCESS_TOKEN, MercadoPagoApi
from tests.test_checkout import BODY, ROUTE, seed_catalog

SECRET = "mp-checkout-secret"
MP_BODY = BODY | {"provider": "mercadopago"}


@pytest.fixture
async def mp_api():
    api = MercadoPagoApi(webhook_secret=SECRET)
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
def mp_settings(settings, mp_api):
    return settings.model_copy(
        update={
            "mercadopago_access_token": SecretStr(ACCESS_TOKEN),
            "mercadopago_api_url": mp_api.url,
            "mercadopago_webhook_secret": SecretStr(SECRET),
        }
    )


@pytest.fixture
async def shop(db, make_client, mp_settings):
    await seed_catalog(db)
    return await make_client(mp_settings)


async def _checkout(client, body):
    response = await client.post(ROUTE, json=body)
    return response, await response.json()


async def test_a_preference_is_made_from_the_order(shop, db, mp_api) -> None:
    client = shop
    response, answer = await _checkout(client, MP_BODY | {"installments": 12})
    assert response.status == 201, answer
    order = await orders.get(db, uuid.UUID(answer["order_id"]))
    assert order is not None and order.status == "open"
    preference = mp_api.preferences()[order.provider_ref or ""]
    assert answer["redirect_url"] == preference["init_point"]
    (call,) = mp_api.calls("/checkout/preferences")
    assert call.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    sent = json.loads(call.body)
    assert sent["items"] == [
        {
            "id": "smartcompute",
            "title": "SmartCompute",
            "quantity": 1,
            "currency_id": "MXN",
            "unit_price": 1500.0,
        }
    ]
    assert sent["external_reference"] == str(order.id)
    assert sent["payer"] == {"email": "comprador@example.com"}
    assert sent["payment_methods"] == {"installments": 12, "default_installments": 12}
    assert sent["back_urls"]["success"].endswith(f"/checkout/success?order={order.id}")
    assert sent["back_urls"]["pending"].endswith(f"/checkout/pending?order={order.id}")
    assert sent["notification_url"].endswith("/webhooks/mercadopago")
    assert "metadata" not in sent


async def test_cop_is_whole_pesos_and_pse_is_not_excluded(shop, mp_api) -> None:
    client = shop
    # The stand-in is a Mexican seller, so it refuses COP as Mercado Pago would: 502, and the
    # request colmena sent is what this test reads.
    response, answer = await _checkout(client, MP_BODY | {"currency": "COP", "installments": 3})
    assert response.status == 502, answer
    sent = json.loads(mp_api.calls("/checkout/preferences")[0].body)
    assert sent["items"][0]["unit_price"] == 300000  # 150000 COP x 2 seats, no decimals
    assert sent["items"][0]["currency_id"] == "COP"
    assert "excluded_payment_types" not in sent["payment_methods"]


async def test_mercadopago_down_is_503_and_the_retry_works(shop, db, mp_api) -> None:
    client = shop
    headers = {"Idempotency-Key": "mp-down"}
    mp_api.fail(500)
    refused = await client.post(ROUTE, json=MP_BODY, headers=headers)
    assert refused.status == 503
    order_id = (await refused.json())["error"]["order_id"]
    kept = await orders.get(db, uuid.UUID(order_id))
    assert kept is not None and kept.status == "pending_provider"
    retried = await client.post(ROUTE, json=MP_BODY, headers=headers)
    assert retried.status == 201
    assert (await retried.json())["order_id"] == order_id


async def test_paying_the_preference_settles_the_order(
    shop, db, mp_api, start_worker, mp_settings
) -> None:
    client = shop
    response, answer = await _checkout(client, MP_BODY)
    assert response.status == 201, answer
    start_worker(settings_override=mp_settings, queues=["payments"])
    # The test server's port is chosen at its start, after the settings that name colmena's
    # public URL: point this preference's notifications at it, as a deployment's URL would.
    order = await orders.get(db, uuid.UUID(answer["order_id"]))
    assert order is not None
    mp_api.preferences()[order.provider_ref or ""]["notification_url"] = str(
        client.make_url("/webhooks/mercadopago")
    )
    async with aiohttp.ClientSession() as http:
        paid = await http.post(
            answer["redirect_url"].replace("/redirect?", "/redirect/pay?"), allow_redirects=False
        )
    assert paid.status == 303, await paid.text()
    order_id = uuid.UUID(answer["order_id"])

    async def settled():
        order = await orders.get(db, order_id)
        return order if order is not None and order.status == "paid" else None

    order = await wait_for(settled, timeout=30)
    payment = await payments.get(db, order.payment_id)
    assert payment is not None and payment.provider == "mercadopago"
    assert (payment.amount_minor, payment.currency) == (150_000, "MXN")
    assert payment.metadata["order_id"] == str(order_id)
    assert (
        await db.fetchval(
            "SELECT count(*) FROM outbox WHERE actor = 'deliver_license' AND args = $1::jsonb",
            [payment.id],
        )
        == 1
    )
