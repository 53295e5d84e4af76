"""Realistic provider payloads, in the providers' wire shapes, for `colmena trigger` and tests.

Stripe objects follow the API reference (event envelope with `data.object`, amounts in minor
units, lowercase currency, `metadata` strings); Mercado Pago notifications follow the v1 webhook
body (`{"action", "api_version", "data": {"id"}, "type", ...}`) whose payment the actor then
fetches from the API. Bitso deliveries follow its payload examples (`{"event", "payload"}`; a
payment intent's `amount` a JSON number in major units, a deposit's a string).
"""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

API_VERSION = "2024-06-20"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def stripe_event(kind: str, obj: dict[str, Any], *, created: int | None = None) -> dict[str, Any]:
    return {
        "id": new_id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": int(time.time()) if created is None else created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": new_id("req"), "idempotency_key": secrets.token_hex(16)},
        "type": kind,
    }


def payment_intent(
    *,
    payment_intent_id: str | None = None,
    amount: int = 150_000,
    currency: str = "mxn",
    status: str = "succeeded",
    email: str | None = "cliente@example.com",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "id": payment_intent_id or new_id("pi"),
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": amount if status == "succeeded" else 0,
        "currency": currency,
        "customer": None,
        "description": "Colmena",
        "latest_charge": new_id("ch"),
        "livemode": False,
        "metadata": metadata or {},
        "payment_method": new_id("pm"),
        "payment_method_types": ["card"],
        "receipt_email": email,
        "status": status,
        "created": int(time.time()),
        "last_payment_error": None
        if status == "succeeded"
        else {"code": "card_declined", "type": "card_error"},
    }


def charge(
    *,
    payment_intent_id: str,
    amount: int = 150_000,
    refunded_amount: int | None = None,
    currency: str = "mxn",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    refunded = amount if refunded_amount is None else refunded_amount
    return {
        "id": new_id("ch"),
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": refunded,
        "currency": currency,
        "paid": True,
        "payment_intent": payment_intent_id,
        "refunded": refunded >= amount,
        "status": "succeeded",
        "metadata": metadata or {},
        "billing_details": {"email": None, "name": None},
        "created": int(time.time()),
    }


def checkout_session(
    *,
    payment_intent_id: str | None,
    amount: int = 150_000,
    currency: str = "mxn",
    payment_status: str = "paid",
    email: str = "cliente@example.com",
    metadata: dict[str, str] | None = None,
    mode: str = "payment",
) -> dict[str, Any]:
    return {
        "id": new_id("cs_test"),
        "object": "checkout.session",
        "amount_total": amount,
        "currency": currency,
        "customer_details": {"email": email, "name": None},
        "metadata": metadata or {},
        "mode": mode,
        "payment_intent": payment_intent_id,
        "payment_status": payment_status,
        "status": "complete",
        "subscription": new_id("sub") if mode == "subscription" else None,
    }


def invoice(
    *,
    subscription_id: str,
    amount: int = 49_900,
    currency: str = "usd",
    email: str = "cliente@example.com",
    metadata: dict[str, str] | None = None,
    paid: bool = True,
) -> dict[str, Any]:
    return {
        "id": new_id("in"),
        "object": "invoice",
        "amount_due": amount,
        "amount_paid": amount if paid else 0,
        "currency": currency,
        "customer": new_id("cus"),
        "customer_email": email,
        "status": "paid" if paid else "open",
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": subscription_id, "metadata": metadata or {}},
        },
        "metadata": {},
    }


def subscription(
    *, subscription_id: str, status: str = "active", metadata: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "id": subscription_id,
        "object": "subscription",
        "status": status,
        "metadata": metadata or {},
    }


def mercadopago_notification(payment_id: str, *, action: str = "payment.updated") -> dict[str, Any]:
    return {
        "action": action,
        "api_version": "v1",
        "data": {"id": payment_id},
        "date_created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "id": int(time.time() * 1000) * 1000 + secrets.randbelow(1000),
        "live_mode": False,
        "type": "payment",
        "user_id": "1234567890",
    }


def _bitso_time(moment: float) -> str:
    """Bitso's timestamps: ISO 8601 UTC with microseconds and a Z."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def bitso_payment_intent(
    *,
    intent_id: str | None = None,
    status: str = "COMPLETED",
    amount: float = 1500.0,
    asset: str = "MXN",
    external_ref: str | None = None,
    updated: float | None = None,
) -> dict[str, Any]:
    """A Pay with Bitso `payment_intent` delivery body, as Bitso's payload examples show it."""
    intent_id = intent_id or str(uuid.uuid4())
    changed = time.time() if updated is None else updated
    created = changed - 60
    payload: dict[str, Any] = {
        "id": intent_id,
        "external_ref": external_ref or f"colmena-{secrets.token_hex(4)}",
        "amount": amount,
        "asset": asset,
        "created_at": _bitso_time(created),
        "expires_at": _bitso_time(created + 3600),
        "status": status,
        "type": "PAY_WITH_BITSO",
        "pay_with_bitso": {
            "success_redirect_url": "https://example.com/success",
            "error_redirect_url": "https://example.com/error",
            "duration": "PT1H",
            "universal_link": f"https://bitso.com/pay-with-bitso/{intent_id}",
        },
    }
    if status != "CREATED":
        payload["pay_with_bitso"]["universal_link_visited_at"] = _bitso_time(created + 5)
        payload["updated_at"] = _bitso_time(changed)
    return {"event": "payment_intent", "payload": payload}


def bitso_funding(
    *,
    fid: str | None = None,
    status: str = "complete",
    amount: str = "1500.00",
    concepto: str = "PAGO",
    created: float | None = None,
) -> dict[str, Any]:
    """A SPEI `funding` delivery body (a deposit into the Bitso account), as Bitso shows it;
    `concepto` is where the payer writes the order reference."""
    moment = time.time() if created is None else created
    return {
        "event": "funding",
        "payload": {
            "fid": fid or secrets.token_hex(16),
            "status": status,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(moment)),
            "currency": "mxn",
            "method": "praxis",
            "method_name": "SPEI Transfer",
            "amount": amount,
            "asset": "mxn",
            "network": "spei",
            "protocol": "clabe",
            "integration": "praxis",
            "details": {
                "sender_name": "CLIENTE DE PRUEBA",
                "sender_clabe": "*****0606032******",
                "sender_bank": "40012",
                "clave": str(secrets.randbelow(10**6)),
                "clave_rastreo": f"MBAN{secrets.randbelow(10**20):020d}",
                "numeric_reference": str(secrets.randbelow(10**7)),
                "concepto": concepto,
                "cep_link": "",
            },
        },
    }
