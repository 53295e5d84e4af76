"""Mercado Pago IPN (`?topic=payment&id=...`, unsigned) as a hint: nothing of the body is kept,
the payment is fetched from the API, one id costs one fetch per window, a global budget bounds
the rest; merchant orders settle every payment they list, each fetched on its own."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from tests.conftest import wait_for
from tests.payments_support import LICENSE_METADATA, MP_SECRET, MP_TOKEN, follow_ups, payment_status
from tests.standins.mercadopago import payment_object
from tests.standins.mercadopago_orders import MercadoPagoOrdersStandin, merchant_order


@pytest.fixture
async def mp_api():
    standin = MercadoPagoOrdersStandin(MP_TOKEN)
    await standin.start()
    yield standin
    await standin.stop()


@pytest.fixture
def ipn_settings(settings, mp_api):
    return settings.model_copy(
        update={
            "mercadopago_webhook_secret": SecretStr(MP_SECRET),
            "mercadopago_access_token": SecretStr(MP_TOKEN),
            "mercadopago_api_url": mp_api.url,
            "mercadopago_timeout_s": 2.0,
            "mercadopago_ipn_budget_per_minute": 3,
        }
    )


@pytest.fixture
async def system(ipn_settings, start_worker, make_client):
    start_worker(settings_override=ipn_settings, queues=["payments"])
    return await make_client(ipn_settings)


async def hint(client, topic: str, resource_id: str, body: bytes = b""):
    return await client.post(
        "/webhooks/mercadopago", params={"topic": topic, "id": resource_id}, data=body
    )


async def processed(db, count: int = 1) -> bool:
    return await db.fetchval("SELECT count(*) FROM inbox WHERE processed_at IS NOT NULL") >= count


async def test_ipn_hint_settles_from_the_api_never_from_its_body(system, db, mp_api) -> None:
    payment = mp_api.put(payment_object(status="approved", metadata=LICENSE_METADATA))
    lying_body = b'{"status": "refunded", "transaction_amount": 1, "id": 1}'
    response = await hint(system, "payment", str(payment["id"]), lying_body)
    assert response.status == 200, await response.text()
    assert await response.json() == {"received": True, "duplicate": False}
    await wait_for(lambda: processed(db))
    assert await payment_status(db, "mercadopago", str(payment["id"])) == "approved"
    stored = await db.fetchval("SELECT payload FROM inbox")
    assert stored == {"type": "payment", "data": {"id": str(payment["id"])}, "hint": "ipn"}
    assert await follow_ups(db) == [("licenses", "deliver_license"), ("stamping", "stamp_invoice")]


async def test_one_id_costs_one_fetch_per_window(system, db, mp_api) -> None:
    payment = mp_api.put(payment_object(status="pending"))
    answers = [await (await hint(system, "payment", str(payment["id"]))).json() for _ in range(3)]
    assert [answer["duplicate"] for answer in answers] == [False, True, True]
    await wait_for(lambda: processed(db))
    assert mp_api.requests == [f"/v1/payments/{payment['id']}"]


async def test_hints_beyond_the_global_budget_are_refused_with_retry_after(
    make_client, ipn_settings, db
) -> None:
    client = await make_client(ipn_settings)
    statuses = [(await hint(client, "payment", str(9_000 + n))).status for n in range(3)]
    assert statuses == [200, 200, 200]
    refused = await hint(client, "payment", "9999")
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "60"
    assert await db.fetchval("SELECT count(*) FROM inbox") == 3


async def test_a_hint_naming_an_unknown_payment_is_ignored_not_dead_lettered(
    system, db, mp_api
) -> None:
    assert (await hint(system, "payment", "404404404")).status == 200
    await wait_for(lambda: processed(db))
    outcome = await db.fetchval("SELECT outcome FROM inbox")
    assert outcome == "ignored: hinted payment 404404404 is unknown to the API"
    assert await db.fetchval("SELECT count(*) FROM payments") == 0


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"topic": "payment", "id": "12a"}, 400),
        ({"topic": "payment", "id": ""}, 400),
        ({"topic": "payment", "id": "1" * 21}, 400),
        ({"topic": "chargebacks", "id": "123"}, 200),
    ],
)
async def test_bad_or_foreign_hints_store_nothing(
    make_client, ipn_settings, db, params, status
) -> None:
    client = await make_client(ipn_settings)
    response = await client.post("/webhooks/mercadopago", params=params)
    assert response.status == status
    assert await db.fetchval("SELECT count(*) FROM inbox") == 0


async def test_hints_disabled_or_without_api_access_are_not_taken(
    make_client, ipn_settings, db
) -> None:
    disabled = await make_client(ipn_settings.model_copy(update={"mercadopago_ipn_enabled": False}))
    refused = await disabled.post(
        "/webhooks/mercadopago",
        params={"topic": "payment", "id": "123"},
        json={"resource": "123", "topic": "payment"},
    )
    assert refused.status == 401  # the signed path: no x-signature
    no_token = await make_client(ipn_settings.model_copy(update={"mercadopago_access_token": None}))
    assert (await hint(no_token, "payment", "123")).status == 503
    assert await db.fetchval("SELECT count(*) FROM inbox") == 0


async def test_merchant_order_settles_every_payment_it_lists(system, db, mp_api) -> None:
    rejected = mp_api.put(payment_object(status="rejected"))
    approved = mp_api.put(payment_object(status="approved", metadata=LICENSE_METADATA))
    # The order's summaries say otherwise: colmena reads each payment itself.
    order = merchant_order([rejected, approved])
    order["payments"][1]["status"] = "pending"
    mp_api.put_order(order)
    assert (await hint(system, "merchant_order", str(order["id"]))).status == 200
    await wait_for(lambda: processed(db))
    assert await payment_status(db, "mercadopago", str(rejected["id"])) == "rejected"
    assert await payment_status(db, "mercadopago", str(approved["id"])) == "approved"
    assert mp_api.requests == [
        f"/merchant_orders/{order['id']}",
        f"/v1/payments/{rejected['id']}",
        f"/v1/payments/{approved['id']}",
    ]
    outcome = await db.fetchval("SELECT outcome FROM inbox")
    assert outcome == "applied: rejected; applied: approved"
