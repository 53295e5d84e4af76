"""Helpers for payments tests: signed webhook posts and database probes."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from colmena.gateways import mercadopago, stripe

STRIPE_SECRET = "whsec_test_current"
STRIPE_OLD_SECRET = "whsec_test_previous"
MP_SECRET = "mp-webhook-secret"
MP_OLD_SECRET = "mp-webhook-secret-previous"
MP_TOKEN = "TEST-1234-access-token"

LICENSE_METADATA = {
    "product": "colmena-enterprise",
    "product_kind": "license",
    "edition": "enterprise",
    "seats": "5",
    "locale": "es-MX",
    "rfc": "XAXX010101000",
    "fiscal_name": "PUBLICO EN GENERAL",
    "fiscal_regime": "616",
    "fiscal_postal_code": "06600",
    "cfdi_use": "S01",
}


def stripe_post_args(
    event: dict[str, Any], *, secret: str = STRIPE_SECRET, timestamp: int | None = None
) -> dict[str, Any]:
    body = json.dumps(event)
    return {
        "data": body.encode(),
        "headers": {
            "Content-Type": "application/json",
            "Stripe-Signature": stripe.sign(body, secret, timestamp),
        },
    }


def mercadopago_post_args(
    notification: dict[str, Any],
    *,
    secret: str = MP_SECRET,
    ts: int | None = None,
    query_id: str | None = None,
) -> dict[str, Any]:
    request_id = str(uuid.uuid4())
    data_id = query_id if query_id is not None else str(notification["data"]["id"])
    return {
        "params": {"data.id": data_id, "type": "payment"},
        "data": json.dumps(notification).encode(),
        "headers": {
            "Content-Type": "application/json",
            "x-request-id": request_id,
            "x-signature": mercadopago.sign(
                data_id=data_id,
                request_id=request_id,
                secret=secret,
                ts=int(time.time()) if ts is None else ts,
            ),
        },
    }


async def payment_status(db, provider: str, provider_payment_id: str) -> str | None:
    return await db.fetchval(
        "SELECT status FROM payments WHERE provider = $1 AND provider_payment_id = $2",
        provider,
        provider_payment_id,
    )


async def follow_ups(db) -> list[tuple[str, str]]:
    rows = await db.fetch("SELECT queue, actor FROM outbox WHERE queue <> 'payments' ORDER BY id")
    return [(row["queue"], row["actor"]) for row in rows]


async def stored_counts(db) -> tuple[int, int, int]:
    return (
        await db.fetchval("SELECT count(*) FROM inbox"),
        await db.fetchval("SELECT count(*) FROM outbox"),
        await db.fetchval("SELECT count(*) FROM payments"),
    )
