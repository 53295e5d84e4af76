"""POST /api/v1/checkout with Stripe: the order stored first, the session made through the
official library against a stand-in speaking Stripe's wire format, idempotent retries, a
provider that is down, bad input that creates nothing, and the pages that show the real state."""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr

from colmena.config import Settings
from colmena.domain import catalog as catalog_rules
from colmena.store import catalog, orders
from tests.standins.stripe_api import SECRET_KEY, StripeApi
from tests.test_openapi import Checked

ROUTE = "/api/v1/checkout"
PRODUCT = "smartcompute"
BODY: dict[str, Any] = {
    "product": PRODUCT,
    "edition": "pro",
    "seats": 2,
    "quantity": 1,
    "currency": "MXN",
    "email": "comprador@example.com",
    "provider": "stripe",
}


async def seed_catalog(db) -> None:
    """smartcompute (editions basic/pro, 10 seats) at 750.00 MXN per seat, 40 USD, 150000 COP;
    an archived EUR price; and the pro plan at 299.00 MXN a month."""
    product = catalog_rules.license_product(PRODUCT, "SmartCompute", PRODUCT, ["basic", "pro"], 10)
    await catalog.add_product(db, product)
    for currency, amount in (("MXN", "750.00"), ("USD", "40.00"), ("COP", "150000"), ("EUR", "35")):
        await catalog.set_price(
            db, catalog_rules.new_price(product, currency=currency, amount=amount)
        )
    eur = next(p for p in await catalog.list_prices(db, product_ref=PRODUCT) if p.currency == "EUR")
    await catalog.archive_price(db, eur.id)
    plan = catalog_rules.plan_product("pro-plan", "Pro", "pro")
    await catalog.add_product(db, plan)
    await catalog.set_price(
        db, catalog_rules.new_price(plan, currency="MXN", amount="299.00", billing_period="month")
    )


@pytest.fixture
async def stripe_api() -> AsyncIterator[StripeApi]:
    api = StripeApi()
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
def checkout_settings(settings: Settings, stripe_api: StripeApi) -> Settings:
    return settings.model_copy(
        update={
            "stripe_secret_key": SecretStr(SECRET_KEY),
            "stripe_api_url": stripe_api.url,
        }
    )


@pytest.fixture
async def shop(db, make_client, checkout_settings):
    await seed_catalog(db)
    return await make_client(checkout_settings)


def form(body: bytes) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(body.decode()))


async def test_the_order_is_stored_then_the_stripe_session_made(shop, db, stripe_api) -> None:
    response = await shop.post(ROUTE, json=BODY, headers={"Idempotency-Key": "k-first"})
    assert response.status == 201, await response.text()
    answer = await response.json()
    order = await orders.get(db, uuid.UUID(answer["order_id"]))
    assert order is not None
    assert (order.status, order.amount, order.currency) == ("open", Decimal("1500.00"), "MXN")
    session = stripe_api.sessions()[order.provider_ref or ""]
    assert answer == {
        "order_id": str(order.id),
        "provider": "stripe",
        "redirect_url": session["url"],
        "status": "open",
    }
    (call,) = stripe_api.calls("/v1/checkout/sessions")
    sent = form(call.body)
    assert call.headers["Idempotency-Key"] == "k-first"
    assert call.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert sent["mode"] == "payment"
    assert sent["line_items[0][price_data][unit_amount]"] == "150000"
    assert sent["line_items[0][price_data][currency]"] == "mxn"
    assert sent["line_items[0][quantity]"] == "1"
    assert sent["client_reference_id"] == str(order.id)
    metadata = {key: value for key, value in sent.items() if "metadata" in key}
    assert metadata == {
        "metadata[order_id]": str(order.id),
        "payment_intent_data[metadata][order_id]": str(order.id),
    }
    assert sent["success_url"].endswith(f"/checkout/success?order={order.id}")
    assert sent["cancel_url"].endswith(f"/checkout/cancel?order={order.id}")
    assert "payment_method_options[card][installments][enabled]" not in sent


async def test_stripe_installments_in_mxn_enable_them_on_the_session(shop, stripe_api) -> None:
    response = await shop.post(ROUTE, json=BODY | {"installments": 6})
    assert response.status == 201, await response.text()
    (call,) = stripe_api.calls("/v1/checkout/sessions")
    assert form(call.body)["payment_method_options[card][installments][enabled]"] == "true"


async def test_the_same_key_and_body_answer_the_same_order_once(shop, db, stripe_api) -> None:
    headers = {"Idempotency-Key": "k-retry"}
    first = await shop.post(ROUTE, json=BODY, headers=headers)
    assert first.status == 201
    again = await shop.post(ROUTE, json=BODY, headers=headers)
    assert again.status == 200
    assert await again.json() == await first.json()
    assert len(stripe_api.calls("/v1/checkout/sessions")) == 1
    other = await shop.post(ROUTE, json=BODY | {"seats": 3}, headers=headers)
    assert other.status == 409
    assert (await other.json())["error"]["code"] == "idempotency_conflict"
    assert await orders.count(db) == 1
    assert len(stripe_api.calls("/v1/checkout/sessions")) == 1


async def test_without_a_key_every_checkout_is_a_new_order(shop, db) -> None:
    for _ in range(2):
        assert (await shop.post(ROUTE, json=BODY)).status == 201
    assert await orders.count(db) == 2


@pytest.mark.parametrize("failure", ["down", 500, 503, 429])
async def test_a_provider_down_is_503_and_the_retry_completes_the_order(
    shop, db, stripe_api, failure
) -> None:
    headers = {"Idempotency-Key": f"k-down-{failure}"}
    if failure == "down":
        await stripe_api.go_down()
    else:
        stripe_api.fail(int(failure))
    refused = await shop.post(ROUTE, json=BODY, headers=headers)
    assert refused.status == 503, await refused.text()
    error = (await refused.json())["error"]
    assert error["code"] == "provider_unavailable"
    kept = await orders.get(db, uuid.UUID(error["order_id"]))
    assert kept is not None
    assert (kept.status, kept.provider_ref, kept.redirect_url) == ("pending_provider", None, None)
    if failure == "down":
        await stripe_api.come_back()
    retried = await shop.post(ROUTE, json=BODY, headers=headers)
    assert retried.status == 201, await retried.text()
    answer = await retried.json()
    assert (answer["order_id"], answer["status"]) == (str(kept.id), "open")
    assert await orders.count(db) == 1
    keys = {
        call.headers.get("Idempotency-Key") for call in stripe_api.calls("/v1/checkout/sessions")
    }
    assert keys == {headers["Idempotency-Key"]}


async def test_a_provider_refusal_is_502_and_the_order_waits(shop, db, stripe_api) -> None:
    stripe_api.fail(400)
    refused = await shop.post(ROUTE, json=BODY)
    assert refused.status == 502
    error = (await refused.json())["error"]
    assert error["code"] == "provider_refused"
    kept = await orders.get(db, uuid.UUID(error["order_id"]))
    assert kept is not None and kept.status == "pending_provider"


FISCAL = {
    "rfc": "XAXX010101000",
    "name": "Público en general",
    "regime": "616",
    "postal_code": "06600",
    "cfdi_use": "S01",
}
BAD_INPUT = [
    ({"product": "nothing-here"}, 404, "unknown_product"),
    ({"currency": "EUR"}, 422, "no_price"),  # archived price
    ({"currency": "JPY"}, 422, "no_price"),  # never priced in it
    ({"quantity": -1}, 422, "invalid_fields"),
    ({"quantity": 0}, 422, "invalid_fields"),
    ({"quantity": 101}, 422, "invalid_fields"),
    ({"seats": 10**9}, 422, "invalid_fields"),
    ({"seats": 6, "quantity": 2}, 422, "too_many_seats"),
    ({"quantity": "2"}, 422, "invalid_fields"),
    ({"edition": "platinum"}, 422, "unknown_edition"),
    ({"installments": 5}, 422, "installments_not_allowed"),  # not a Stripe plan
    ({"installments": 3, "currency": "USD"}, 422, "installments_not_allowed"),
    ({"provider": "bitso", "installments": 3}, 422, "installments_not_allowed"),
    ({"provider": "mercadopago", "installments": 40}, 422, "installments_not_allowed"),
    ({"provider": "bitso", "currency": "USD"}, 422, "currency_not_allowed"),
    ({"fiscal": FISCAL | {"rfc": "XAXX011301000"}}, 422, "invalid_fiscal_data"),  # month 13
    ({"fiscal": FISCAL | {"rfc": "1234567890123"}}, 422, "invalid_fiscal_data"),
    ({"fiscal": FISCAL | {"regime": "999"}}, 422, "invalid_fiscal_data"),
    ({"fiscal": FISCAL | {"cfdi_use": "Z99"}}, 422, "invalid_fiscal_data"),
    ({"fiscal": FISCAL, "currency": "USD"}, 422, "invalid_fiscal_data"),  # CFDI in MXN only
    ({"email": "not-an-email"}, 422, "invalid_email"),
    ({"email": "a@b"}, 422, "invalid_email"),
    ({"provider": "paypal"}, 422, "invalid_fields"),
    ({"unexpected": True}, 422, "invalid_fields"),
    ({"provider": "mercadopago"}, 422, "provider_not_available"),  # no access token here
]


@pytest.mark.parametrize(("change", "status", "code"), BAD_INPUT)
async def test_bad_input_is_a_clear_4xx_that_creates_nothing(
    shop, db, stripe_api, change, status, code
) -> None:
    response = await shop.post(ROUTE, json=BODY | change, headers={"Idempotency-Key": "k-bad"})
    assert response.status == status, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == code
    assert error["message"]
    assert await orders.count(db) == 0
    assert stripe_api.requests == []


async def test_a_body_that_is_not_json_or_a_bad_key_is_400(shop, db, stripe_api) -> None:
    not_json = await shop.post(ROUTE, data=b"{", headers={"Content-Type": "application/json"})
    assert (not_json.status, (await not_json.json())["error"]["code"]) == (400, "invalid_json")
    bad_key = await shop.post(ROUTE, json=BODY, headers={"Idempotency-Key": "has space"})
    assert (bad_key.status, (await bad_key.json())["error"]["code"]) == (
        400,
        "invalid_idempotency_key",
    )
    assert await orders.count(db) == 0
    assert stripe_api.requests == []


async def test_the_pages_show_the_orders_real_state(shop, db) -> None:
    created = await (await shop.post(ROUTE, json=BODY)).json()
    page = await shop.get(f"/checkout/success?order={created['order_id']}")
    assert page.status == 200
    assert page.content_type == "text/html"
    text = await page.text()
    assert "Gracias por tu compra" in text
    assert 'data-status="open"' in text and "esperando el pago" in text
    assert "1,500.00 MXN" in text
    await db.execute(
        "UPDATE orders SET status = 'paid' WHERE id = $1", uuid.UUID(created["order_id"])
    )
    english = await shop.get(f"/checkout/pending?order={created['order_id']}&lang=en")
    assert (
        "Payment pending" in await english.text()
        and "<strong>paid</strong>" in await english.text()
    )
    cancel = await shop.get(
        f"/checkout/cancel?order={created['order_id']}", headers={"Accept-Language": "en-US"}
    )
    assert "Payment cancelled" in await cancel.text()
    for query in (f"order={uuid.uuid4()}", "order=not-a-uuid", ""):
        missing = await shop.get(f"/checkout/success?{query}")
        assert missing.status == 404
        assert missing.content_type == "text/html"
        assert "Pedido no encontrado" in await missing.text()


async def test_fields_are_escaped_in_the_pages(shop, db) -> None:
    created = await (await shop.post(ROUTE, json=BODY)).json()
    await db.execute(
        "UPDATE orders SET edition = '<script>x</script>' WHERE id = $1",
        uuid.UUID(created["order_id"]),
    )
    text = await (await shop.get(f"/checkout/success?order={created['order_id']}")).text()
    assert "<script>" not in text and "&lt;script&gt;" in text


async def test_every_answer_matches_the_openapi_document(shop, stripe_api) -> None:
    api = Checked(shop)
    key = {"Idempotency-Key": "k-doc"}
    assert (await api.call(ROUTE, "POST", json=BODY, headers=key))[0] == 201
    assert (await api.call(ROUTE, "POST", json=BODY, headers=key))[0] == 200
    assert (await api.call(ROUTE, "POST", json=BODY | {"seats": 3}, headers=key))[0] == 409
    assert (await api.call(ROUTE, "POST", json=BODY | {"product": "none"}))[0] == 404
    assert (await api.call(ROUTE, "POST", json=BODY | {"seats": 0}))[0] == 422
    assert (await api.call(ROUTE, "POST", json=BODY | {"currency": "JPY"}))[0] == 422
    assert (await api.call(ROUTE, "POST", data=b"[", headers={"Content-Type": "application/json"}))[
        0
    ] == 400
    stripe_api.fail(503)
    assert (await api.call(ROUTE, "POST", json=BODY))[0] == 503
    stripe_api.fail(400)
    assert (await api.call(ROUTE, "POST", json=BODY))[0] == 502
    api.assert_covers("checkout")
