"""Stripe Checkout sandbox, payment mode: what `POST /api/v1/checkout` calls for a one-off
purchase, served by `colmena dev` under /sandbox/stripe, in Stripe's wire format.

- `POST /v1/checkout/sessions` (mode=payment, inline `price_data` line items): a Checkout
  Session object as the API reference shows it (`status` open, `payment_status` unpaid, `url`,
  `client_reference_id`, `metadata`, amounts in minor units). `Idempotency-Key` replays the first
  answer; the same key with other parameters is refused, as Stripe does.
- `GET /checkout/{session}`: the sandbox's hosted page, where the session's `url` points.
  `POST /checkout/{session}/pay` "pays": the session completes with a PaymentIntent carrying the
  session's `payment_intent_data.metadata`, and `checkout.session.completed` and
  `payment_intent.succeeded` are posted, signed, to the ingress's /webhooks/stripe; the browser
  then goes to the success URL. `POST /checkout/{session}/cancel` sends it to the cancel URL.

The Stripe wire machinery (form decoding, idempotent replies, test-key check, signed delivery)
is the Stripe Billing sandbox's: one Stripe, two sandboxes for its two modes.
"""

from __future__ import annotations

import html
import time
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from colmena.config import Settings
from colmena.gateways import sample_events
from colmena.sandbox import stripe_billing as stripe_api
from colmena.sandbox.stripe_billing import LEDGER, TARGET, Ledger, StripeApiError, WebhookTarget


def _integer(value: Any, param: str) -> int:
    text = str(value)
    if not text.isdigit():
        raise StripeApiError(
            400, f"Invalid integer: {text}", code="parameter_invalid_integer", param=param
        )
    return int(text)


def _items(params: dict[str, Any]) -> dict[str, Any]:
    """The session's line items (inline prices, one currency) and their total."""
    items = params.get("line_items")
    if not isinstance(items, list) or not items:
        raise StripeApiError(
            400,
            "You must provide line_items in payment mode.",
            code="parameter_missing",
            param="line_items",
        )
    currencies, total, names = set(), 0, []
    for index, item in enumerate(items):
        price = item.get("price_data") if isinstance(item, dict) else None
        if not isinstance(price, dict):
            raise StripeApiError(
                400,
                "Each line item needs price_data.",
                code="parameter_missing",
                param=f"line_items[{index}][price_data]",
            )
        amount = _integer(price.get("unit_amount", ""), f"line_items[{index}][unit_amount]")
        quantity = _integer(item.get("quantity", ""), f"line_items[{index}][quantity]")
        currencies.add(str(stripe_api.required_param(price, "currency")).lower())
        names.append(str((price.get("product_data") or {}).get("name", "")))
        total += amount * quantity
    if len(currencies) != 1:
        raise StripeApiError(
            400, "All line items must use one currency.", code="parameter_invalid", param="currency"
        )
    return {"currency": currencies.pop(), "amount_total": total, "name": ", ".join(names)}


async def create_session(request: web.Request) -> web.Response:
    ledger = request.app[LEDGER]
    base = stripe_api.request_base(request, "/v1/checkout/sessions")

    def create(params: dict[str, Any]) -> dict[str, Any]:
        if params.get("mode") != "payment":
            raise StripeApiError(
                400,
                "This sandbox serves payment mode only.",
                code="parameter_invalid",
                param="mode",
            )
        items = _items(params)
        session_id = sample_events.new_id("cs_test")
        now = int(time.time())
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "payment",
            "status": "open",
            "payment_status": "unpaid",
            "client_reference_id": params.get("client_reference_id"),
            "customer": None,
            "customer_email": params.get("customer_email"),
            "customer_details": None,
            "currency": items["currency"],
            "amount_subtotal": items["amount_total"],
            "amount_total": items["amount_total"],
            "metadata": params.get("metadata") or {},
            "payment_intent": None,
            "payment_method_options": params.get("payment_method_options") or {},
            "payment_method_types": ["card"],
            "success_url": stripe_api.required_param(params, "success_url"),
            "cancel_url": params.get("cancel_url"),
            "url": f"{base}/checkout/{session_id}",
            "created": now,
            "expires_at": now + 86_400,
            "livemode": False,
            "ui_mode": "hosted",
            "_name": items["name"],
            "_intent_metadata": (params.get("payment_intent_data") or {}).get("metadata") or {},
        }
        ledger.sessions[session_id] = session
        return stripe_api.public_view(session)

    return await stripe_api.api_call(request, create)


async def checkout_page(request: web.Request) -> web.Response:
    session = stripe_api.open_session(request)
    amount = f"{session['amount_total']} {session['currency'].upper()} (minor units)"
    action = html.escape(request.path)
    return stripe_api.sandbox_page(
        "Sandbox checkout",
        f"<p>{html.escape(session['_name'])}: {html.escape(amount)}</p>"
        f'<form method="post" action="{action}/pay"><button type="submit">Pay (sandbox)'
        f'</button></form><form method="post" action="{action}/cancel">'
        '<button type="submit">Cancel</button></form>',
    )


async def pay(request: web.Request) -> web.Response:
    """Complete the session: the events Stripe sends for a card paid at Checkout, signed."""
    session = stripe_api.open_session(request)
    if session["status"] != "open":
        raise web.HTTPConflict(text="this checkout session is not open")
    now = int(time.time())
    email = session["customer_email"] or "buyer@example.com"
    intent = sample_events.payment_intent(
        amount=session["amount_total"],
        currency=session["currency"],
        email=email,
        metadata=session["_intent_metadata"],
    )
    session.update(
        status="complete",
        payment_status="paid",
        payment_intent=intent["id"],
        customer_details={"email": email, "name": None},
    )
    events = [
        sample_events.stripe_event(
            "checkout.session.completed", stripe_api.public_view(session), created=now
        ),
        sample_events.stripe_event("payment_intent.succeeded", intent, created=now),
    ]
    await stripe_api.deliver_events(stripe_api.webhook_target(request), events)
    request.app[LEDGER].posted.extend(events)
    raise web.HTTPSeeOther(str(session["success_url"]))


async def cancel(request: web.Request) -> web.Response:
    session = stripe_api.open_session(request)
    raise web.HTTPSeeOther(str(session["cancel_url"] or session["success_url"]))


def stripe_checkout_app(*, target: WebhookTarget | None = None) -> web.Application:
    """The sub-app; `target` sends events somewhere else than the ingress it is mounted on."""
    app = web.Application(middlewares=[stripe_api.api_errors])
    app[LEDGER] = Ledger()
    if target is not None:
        app[TARGET] = target
    app.router.add_post("/v1/checkout/sessions", create_session)
    app.router.add_get("/checkout/{session_id}", checkout_page)
    app.router.add_post("/checkout/{session_id}/pay", pay)
    app.router.add_post("/checkout/{session_id}/cancel", cancel)
    return app


def with_checkout_sandbox(settings: Settings, url: str | None) -> Settings:
    """`settings` with one-off checkouts sent to the sandbox at `url` (none: unchanged), with
    the sandbox's test key when no Stripe key is set."""
    if url is None:
        return settings
    update: dict[str, Any] = {"stripe_api_url": url}
    if settings.stripe_secret_key is None:
        update["stripe_secret_key"] = SecretStr(stripe_api.SANDBOX_SECRET_KEY)
    return settings.model_copy(update=update)
