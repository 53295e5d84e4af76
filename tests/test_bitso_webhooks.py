"""POST /webhooks/bitso on real PostgreSQL/RabbitMQ: Bitso's RSA scheme, dedupe, 401/503.

Deliveries are signed as Bitso documents it (SHA256withRSA over the payload object as compact
JSON) with keys made here; the body is sent with json.dumps' default spacing, as a sender may,
so the check is over the re-serialized payload and never over the raw bytes.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import REGISTRY
from pydantic import SecretStr

from bench.standins.tcp_proxy import TcpProxy
from colmena.config import Settings, SettingsError, load_settings
from colmena.gateways import bitso_webhooks as bitso
from colmena.gateways import sample_events as events
from tests.payments_support import stored_counts

KEY_ID = "bitso-test-key"
OLD_KEY_ID = "bitso-test-key-previous"
DAY_S = 24 * 3600


@functools.cache
def stand_in_keys() -> dict[str, rsa.RSAPrivateKey]:
    """Two private keys standing in for Bitso's (the current one and one being rotated out),
    made once per run."""
    return {
        key_id: rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for key_id in (KEY_ID, OLD_KEY_ID)
    }


@pytest.fixture
def bitso_keys() -> dict[str, rsa.RSAPrivateKey]:
    return stand_in_keys()


def with_bitso_keys(settings: Settings, keys: dict[str, rsa.RSAPrivateKey]) -> Settings:
    return settings.model_copy(
        update={
            "bitso_webhook_public_keys": {
                key_id: bitso.public_key_text(key) for key_id, key in keys.items()
            }
        }
    )


def bitso_post_args(
    body: dict[str, Any], key: rsa.RSAPrivateKey, *, key_id: str = KEY_ID
) -> dict[str, Any]:
    return {
        "data": json.dumps(body).encode(),
        "headers": {
            "Content-Type": "application/json",
            bitso.SIGNATURE_HEADER: bitso.sign(body["payload"], key),
            bitso.KEY_ID_HEADER: key_id,
        },
    }


@pytest.fixture
def bitso_settings(settings, bitso_keys) -> Settings:
    return with_bitso_keys(settings, bitso_keys)


@pytest.fixture
async def bitso_client(make_client, bitso_settings):
    return await make_client(bitso_settings)


def webhook_count(outcome: str) -> float:
    labels = {"provider": "bitso", "outcome": outcome}
    return REGISTRY.get_sample_value("colmena_webhooks_total", labels) or 0.0


async def test_signed_payment_intent_is_stored_with_its_message(
    bitso_client, bitso_keys, db
) -> None:
    body = events.bitso_payment_intent(status="COMPLETED")
    response = await bitso_client.post(
        "/webhooks/bitso", **bitso_post_args(body, bitso_keys[KEY_ID])
    )
    assert response.status == 200, await response.text()
    assert await response.json() == {"received": True, "duplicate": False}
    row = await db.fetchrow("SELECT provider, event_key, kind, payload FROM inbox")
    intent = body["payload"]["id"]
    assert (row["provider"], row["event_key"], row["kind"]) == (
        "bitso",
        f"payment_intent:{intent}:COMPLETED",
        "payment_intent",
    )
    assert row["payload"] == body
    message = await db.fetchrow("SELECT queue, actor FROM outbox")
    assert (message["queue"], message["actor"]) == ("payments", "settle_bitso_event")


async def test_a_key_being_rotated_out_still_verifies(bitso_client, bitso_keys) -> None:
    body = events.bitso_funding(status="pending")
    args = bitso_post_args(body, bitso_keys[OLD_KEY_ID], key_id=OLD_KEY_ID)
    assert (await bitso_client.post("/webhooks/bitso", **args)).status == 200


async def test_duplicate_deliveries_are_stored_once(bitso_client, bitso_keys, db) -> None:
    body = events.bitso_payment_intent(status="FAILED")
    args = bitso_post_args(body, bitso_keys[KEY_ID])
    responses = await asyncio.gather(
        *(bitso_client.post("/webhooks/bitso", **args) for _ in range(5))
    )
    assert [response.status for response in responses] == [200] * 5
    duplicates = sorted([(await response.json())["duplicate"] for response in responses])
    assert duplicates == [False, True, True, True, True]
    # Re-sent later with other spacing: the same signed resource and status, the same event.
    compact = {**args, "data": bitso.signed_bytes(body).replace(b'"payload":', b'"payload": ')}
    again = await bitso_client.post("/webhooks/bitso", **compact)
    assert (await again.json())["duplicate"] is True
    assert await stored_counts(db) == (1, 1, 0)


def _signed_envelope(body: dict[str, Any], key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """A signature over the whole body: not what Bitso signs, so it must not verify."""
    args = bitso_post_args(body, key)
    args["headers"][bitso.SIGNATURE_HEADER] = bitso.sign(body, key)
    return args


def _bad_requests(keys: dict[str, rsa.RSAPrivateKey]) -> dict[str, tuple[int, str, dict]]:
    key = keys[KEY_ID]
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    body = events.bitso_payment_intent(status="COMPLETED")
    good = bitso_post_args(body, key)
    tampered_body = json.loads(good["data"])
    tampered_body["payload"]["amount"] = 1.0
    stale = events.bitso_payment_intent(status="COMPLETED", updated=time.time() - 62 * DAY_S)
    future = events.bitso_payment_intent(status="COMPLETED", updated=time.time() + 3600)
    no_status = events.bitso_payment_intent()
    del no_status["payload"]["status"]
    no_time = events.bitso_funding()
    del no_time["payload"]["created_at"]
    headers = good["headers"]
    return {
        "signed by another key": (401, "invalid_signature", bitso_post_args(body, attacker)),
        "tampered payload": (
            401,
            "invalid_signature",
            {**good, "data": json.dumps(tampered_body).encode()},
        ),
        "envelope signed instead of payload": (
            401,
            "invalid_signature",
            _signed_envelope(body, key),
        ),
        "stale (62 days old)": (401, "invalid_signature", bitso_post_args(stale, key)),
        "dated an hour ahead": (401, "invalid_signature", bitso_post_args(future, key)),
        "missing signature header": (
            401,
            "invalid_signature",
            {**good, "headers": {k: v for k, v in headers.items() if k != bitso.SIGNATURE_HEADER}},
        ),
        "missing key id": (
            401,
            "invalid_signature",
            {**good, "headers": {k: v for k, v in headers.items() if k != bitso.KEY_ID_HEADER}},
        ),
        "unknown key id": (
            401,
            "invalid_signature",
            {**good, "headers": {**headers, bitso.KEY_ID_HEADER: "someone-else"}},
        ),
        "signature not Base64": (
            401,
            "invalid_signature",
            {**good, "headers": {**headers, bitso.SIGNATURE_HEADER: "not*base64"}},
        ),
        "body not JSON": (401, "invalid_signature", {**good, "data": b"{not json"}),
        "signed but no status": (400, "malformed", bitso_post_args(no_status, key)),
        "signed but no time": (400, "malformed", bitso_post_args(no_time, key)),
        "wrong content type": (
            415,
            "unsupported_media_type",
            {**good, "headers": {**headers, "Content-Type": "text/plain"}},
        ),
    }


BAD_CASES = [
    "signed by another key",
    "tampered payload",
    "envelope signed instead of payload",
    "stale (62 days old)",
    "dated an hour ahead",
    "missing signature header",
    "missing key id",
    "unknown key id",
    "signature not Base64",
    "body not JSON",
    "signed but no status",
    "signed but no time",
    "wrong content type",
]


@pytest.mark.parametrize("case", BAD_CASES)
async def test_bad_deliveries_are_refused_and_change_nothing(
    case, bitso_client, bitso_keys, db
) -> None:
    status, outcome, args = _bad_requests(bitso_keys)[case]
    before = webhook_count(outcome)
    security_before = (
        REGISTRY.get_sample_value("colmena_security_events_total", {"reason": f"webhook_{outcome}"})
        or 0.0
    )
    response = await bitso_client.post("/webhooks/bitso", **args)
    assert response.status == status, await response.text()
    assert (await response.json())["error"]["code"] == outcome
    assert await stored_counts(db) == (0, 0, 0)
    assert webhook_count(outcome) == before + 1
    security_after = REGISTRY.get_sample_value(
        "colmena_security_events_total", {"reason": f"webhook_{outcome}"}
    )
    assert security_after == security_before + 1


def test_bad_cases_cover_every_built_request(bitso_keys) -> None:
    assert sorted(_bad_requests(bitso_keys)) == sorted(BAD_CASES)


async def test_without_keys_the_route_answers_503_not_configured(make_client, db) -> None:
    client = await make_client()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    body = events.bitso_payment_intent()
    response = await client.post("/webhooks/bitso", **bitso_post_args(body, key))
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "not_configured"
    assert await stored_counts(db) == (0, 0, 0)


def test_a_key_that_is_not_rsa_der_is_refused_at_start() -> None:
    with pytest.raises(SettingsError, match="COLMENA_BITSO_WEBHOOK_PUBLIC_KEYS: key 'k'"):
        load_settings(bitso_webhook_public_keys={"k": base64.b64encode(b"nope").decode()})


async def test_database_down_answers_503_and_stores_nothing(
    make_client, bitso_settings, bitso_keys, database_url, db
) -> None:
    target = urlsplit(database_url)
    proxy = TcpProxy(target.hostname, target.port)
    port = await proxy.start()
    broker_down = bitso_settings.model_copy(
        update={"broker_url": SecretStr("amqp://guest:guest@127.0.0.1:1/")}
    )
    client = await make_client(
        broker_down, database_url=database_url.replace(f":{target.port}/", f":{port}/")
    )
    accepted = events.bitso_payment_intent(status="COMPLETED")
    response = await client.post("/webhooks/bitso", **bitso_post_args(accepted, bitso_keys[KEY_ID]))
    assert response.status == 200  # RabbitMQ down: still durable, the relay publishes later
    await proxy.cut()
    refused = events.bitso_payment_intent(status="COMPLETED")
    response = await client.post("/webhooks/bitso", **bitso_post_args(refused, bitso_keys[KEY_ID]))
    assert response.status == 503
    assert response.headers["Retry-After"] == "30"
    assert (await response.json())["error"]["code"] == "unavailable"
    keys = [row["event_key"] for row in await db.fetch("SELECT event_key FROM inbox")]
    assert keys == [f"payment_intent:{accepted['payload']['id']}:COMPLETED"]


@pytest.mark.parametrize(
    ("age_s", "reason"),
    [(62 * DAY_S, "stale: "), (-3600, "dated in the future: "), (60 * DAY_S, None), (-60, None)],
)
def test_the_signed_payload_time_bounds_a_delivery(bitso_keys, age_s, reason) -> None:
    body = events.bitso_payment_intent(status="PENDING", updated=time.time() - age_s)
    args = bitso_post_args(body, bitso_keys[KEY_ID])
    public = {KEY_ID: bitso_keys[KEY_ID].public_key()}

    def verify() -> bitso.BitsoEvent:
        return bitso.verify_delivery(
            args["data"],
            signature=args["headers"][bitso.SIGNATURE_HEADER],
            key_id=KEY_ID,
            public_keys=public,
            max_age_s=61 * DAY_S,
            max_skew_s=300,
        )

    if reason is None:
        assert verify().key == f"payment_intent:{body['payload']['id']}:PENDING"
    else:
        with pytest.raises(bitso.BitsoSignatureError) as refused:
            verify()
        assert refused.value.reason.startswith(reason)
