"""The Mercado Pago sandbox's Checkout Pro: preferences, and a page that pays one.

- `POST /checkout/preferences`: a preference as the API reference shows it (`id`
  "<collector>-<uuid>", `init_point`, `sandbox_init_point`, the items, payer, back URLs,
  `payment_methods`, `external_reference`, `notification_url`), 201. Refused as Mercado Pago
  refuses: no items, a non-positive price, a currency other than the sandbox seller's (MXN, a
  Mexican account), `default_installments` above `installments`, `auto_return` without a
  success back URL.
- `GET /checkout/v1/redirect?pref_id=`: where `init_point` points. Paying it
  (`POST /checkout/v1/redirect/pay?pref_id=`) makes an approved payment in the sandbox's ledger
  with a test card (holder APRO), the preference's external_reference and default installments,
  posts the signed notification to the preference's notification_url (with `data.id` and `type`
  in its query, as Mercado Pago sends them), and sends the browser to the success back URL.
"""

from __future__ import annotations

import html
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
from aiohttp import web

from colmena.gateways import mercadopago, sample_events
from colmena.http.context import SETTINGS
from colmena.sandbox.mercadopago_ledger import Ledger
from colmena.sandbox.mercadopago_payments import (
    COLLECTOR_ID,
    CURRENCY,
    SandboxError,
    bad_request,
    money,
    mp_time,
)

PREFERENCES = web.AppKey("mercadopago_sandbox_preferences", dict[str, dict[str, Any]])
# The notification secret; unset: the first Mercado Pago secret of the ingress it is mounted on.
WEBHOOK_SECRET = web.AppKey("mercadopago_sandbox_webhook_secret", str)
# The sandbox app's ledger, where a paid preference's payment is made.
PAYMENTS = web.AppKey("mercadopago_sandbox_preference_ledger", Ledger)
MAX_INSTALLMENTS = 36
BUYER_PAGES = "/checkout/v1/redirect"  # what a buyer's browser opens: no API token there


def _installments(methods: dict[str, Any]) -> tuple[int, int]:
    cap = methods.get("installments", MAX_INSTALLMENTS)
    default = methods.get("default_installments", 1)
    for value, name in ((cap, "installments"), (default, "default_installments")):
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 1 <= value <= MAX_INSTALLMENTS
        ):
            raise bad_request(
                1, f"payment_methods.{name} must be an integer from 1 to {MAX_INSTALLMENTS}"
            )
    if default > cap:
        raise bad_request(1, "default_installments cannot be greater than installments")
    return cap, default


def _items(body: dict[str, Any]) -> list[dict[str, Any]]:
    items = body.get("items")
    if not isinstance(items, list) or not items:
        raise bad_request(1, "items needed")
    checked = []
    for item in items:
        price = item.get("unit_price") if isinstance(item, dict) else None
        if isinstance(price, bool) or not isinstance(price, int | Decimal) or price <= 0:
            raise bad_request(1, "unit_price invalid")
        quantity = item.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            raise bad_request(1, "quantity invalid")
        if item.get("currency_id", CURRENCY) != CURRENCY:
            raise bad_request(1, f"currency_id invalid: the seller's currency is {CURRENCY}")
        checked.append(
            {
                "id": str(item.get("id") or ""),
                "title": str(item.get("title") or ""),
                "quantity": quantity,
                "currency_id": CURRENCY,
                "unit_price": money(Decimal(price)),
            }
        )
    return checked


def preference_object(body: Any, base: str, now: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request(1, "the body must be a JSON object")
    items = _items(body)
    methods = body.get("payment_methods") or {}
    cap, default = _installments(methods)
    back_urls = body.get("back_urls") or {}
    if body.get("auto_return") and not back_urls.get("success"):
        raise bad_request(1, "auto_return invalid. back_url.success must be defined")
    preference_id = f"{COLLECTOR_ID}-{uuid.uuid4()}"
    redirect = f"{base}/checkout/v1/redirect?pref_id={preference_id}"
    return {
        "id": preference_id,
        "collector_id": COLLECTOR_ID,
        "client_id": "6295877106812064",
        "date_created": now,
        "operation_type": "regular_payment",
        "items": items,
        "payer": body.get("payer") or {},
        "back_urls": {key: back_urls.get(key, "") for key in ("success", "pending", "failure")},
        "auto_return": body.get("auto_return", ""),
        "payment_methods": {
            "excluded_payment_methods": methods.get("excluded_payment_methods", []),
            "excluded_payment_types": methods.get("excluded_payment_types", []),
            "installments": cap,
            "default_installments": default,
            "default_payment_method_id": methods.get("default_payment_method_id"),
        },
        "external_reference": body.get("external_reference", ""),
        "notification_url": body.get("notification_url"),
        "metadata": body.get("metadata") or {},
        "expires": False,
        "binary_mode": False,
        "marketplace": "NONE",
        "marketplace_fee": 0,
        "site_id": "MLM",
        "init_point": redirect,
        "sandbox_init_point": redirect,
    }


async def create_preference(request: web.Request) -> web.Response:
    text = await request.text()
    try:
        body = json.loads(text, parse_float=Decimal)
    except ValueError:
        raise SandboxError(400, "bad_request", 1, "the body is not JSON") from None
    base = request.path.removesuffix("/checkout/preferences")
    origin = str(request.url.origin())
    preference = preference_object(body, origin + base, mp_time(datetime.now(UTC)) or "")
    request.app[PREFERENCES][preference["id"]] = preference
    return web.json_response(preference, status=201)


def _preference(request: web.Request) -> dict[str, Any]:
    found = request.app[PREFERENCES].get(request.query.get("pref_id", ""))
    if found is None:
        raise web.HTTPNotFound(text="no such preference")
    return found


def _total(preference: dict[str, Any]) -> Decimal:
    return sum(
        (Decimal(str(item["unit_price"])) * item["quantity"] for item in preference["items"]),
        Decimal(0),
    )


async def redirect_page(request: web.Request) -> web.Response:
    preference = _preference(request)
    title = ", ".join(item["title"] for item in preference["items"])
    action = html.escape(f"{request.path}/pay?pref_id={preference['id']}")
    return web.Response(
        text=f'<!doctype html><html><head><meta charset="utf-8"><title>Mercado Pago sandbox'
        f"</title></head><body><p><strong>SANDBOX</strong>: no real payment.</p>"
        f"<p>{html.escape(title)}: {_total(preference)} {CURRENCY}</p>"
        f'<form method="post" action="{action}"><button type="submit">Pagar (sandbox)'
        "</button></form></body></html>",
        content_type="text/html",
    )


def _secret(request: web.Request) -> str:
    if WEBHOOK_SECRET in request.app:
        return request.app[WEBHOOK_SECRET]
    configured = request.config_dict[SETTINGS].mercadopago_secrets()
    if not configured:
        raise web.HTTPServiceUnavailable(text="no Mercado Pago webhook secret to sign with")
    return configured[0]


async def _notify(url: str, payment_id: str, secret: str) -> None:
    request_id = str(uuid.uuid4())
    headers = {
        "Content-Type": "application/json",
        "x-request-id": request_id,
        "x-signature": mercadopago.sign(data_id=payment_id, request_id=request_id, secret=secret),
    }
    body = json.dumps(sample_events.mercadopago_notification(payment_id))
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client,
        client.post(
            url, data=body, headers=headers, params={"data.id": payment_id, "type": "payment"}
        ) as response,
    ):
        if response.status >= 300:
            raise web.HTTPBadGateway(text=f"notification answered {response.status}")


async def pay(request: web.Request) -> web.Response:
    preference = _preference(request)
    ledger = request.app[PAYMENTS]
    token = ledger.create_card_token(
        mercadopago.TEST_CARD | {"cardholder": {"name": mercadopago.TEST_HOLDERS["approved"]}}
    )
    payment, _ = ledger.create_payment(
        {
            "token": token["id"],
            "transaction_amount": _total(preference),
            "installments": preference["payment_methods"]["default_installments"],
            "payment_method_id": mercadopago.TEST_CARD_METHOD,
            "payer": {"email": preference["payer"].get("email") or "buyer@example.com"},
            "external_reference": preference["external_reference"] or None,
            "description": ", ".join(item["title"] for item in preference["items"]),
            "metadata": preference["metadata"],
        },
        None,
    )
    if preference["notification_url"]:
        await _notify(str(preference["notification_url"]), str(payment.id), _secret(request))
    raise web.HTTPSeeOther(preference["back_urls"]["success"] or "/")


def add_routes(app: web.Application, ledger: Ledger) -> None:
    """Checkout Pro on the Mercado Pago sandbox app, paying into its `ledger`."""
    app[PREFERENCES] = {}
    app[PAYMENTS] = ledger
    app.router.add_post("/checkout/preferences", create_preference)
    app.router.add_get(BUYER_PAGES, redirect_page)
    app.router.add_post(f"{BUYER_PAGES}/pay", pay)
