"""Stripe Billing sandbox: what tenant upgrades call, served by `colmena dev` under
/sandbox/stripe-billing, in Stripe's wire format (form-encoded requests, JSON objects as the API
reference shows them, errors as `{"error": {"type", "code", "message", "param"}}`).

- `POST /v1/customers`, `POST /v1/checkout/sessions` (subscription mode), `POST /v1/prices`,
  `GET`/`POST /v1/subscriptions/{id}` (retrieve, update: an item's price, proration_behavior,
  metadata merged as Stripe merges it), `POST /v1/billing_portal/configurations`,
  `POST /v1/billing_portal/sessions`: the calls colmena.gateways.stripe_billing makes through the
  official library. `Idempotency-Key` replays the first answer; the same key with other
  parameters is refused, as Stripe does. An update sends `customer.subscription.updated` (with
  `previous_attributes`) once it has answered, as Stripe sends its events after the call.
- `GET /checkout/{session}`: the sandbox's checkout page, where the session's `url` points.
  `POST /checkout/{session}/pay` "pays": the subscription becomes active, its first invoice is
  paid, and `customer.subscription.created`, `checkout.session.completed` and `invoice.paid`
  are posted, signed, to the ingress's /webhooks/stripe (or the target the app was made with);
  then the browser goes to the session's success URL.
- `GET /portal/{session}`: the portal session's page: which features its configuration offers
  (a sandbox label, nothing to manage).

Like Stripe it wants a secret key, and only a test one (sk_test_...).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import html
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from colmena.config import Settings
from colmena.gateways import sample_events, stripe
from colmena.http.context import SETTINGS

TEST_KEY_PREFIX = "sk_test_"
SANDBOX_SECRET_KEY = "sk_test_colmena_sandbox"  # what `colmena dev` uses when no key is set
PERIOD_S = {"month": 30 * 86_400, "year": 365 * 86_400}
PRORATIONS = ("create_prorations", "none", "always_invoice")
_KEY_PART = re.compile(r"\[([^\]]*)\]")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StripeApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.param = status, code, param

    def body(self) -> dict[str, Any]:
        kind = "idempotency_error" if self.code == "idempotency_key_in_use" else None
        return {
            "error": {
                "type": kind or "invalid_request_error",
                "code": self.code,
                "message": str(self),
                "param": self.param,
            }
        }


@dataclass
class WebhookTarget:
    """Where paid sessions' events go; mutable, so a test can name an ingress started later."""

    url: str
    secret: str


@dataclass
class Ledger:
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    portals: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    configurations: dict[str, dict[str, Any]] = field(default_factory=dict)
    replies: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    posted: list[dict[str, Any]] = field(default_factory=list)  # every webhook event sent
    undelivered: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (event, why)
    sending: set[asyncio.Task[None]] = field(default_factory=set)
    # Seconds the sandbox's clock runs ahead of the machine's, as a Stripe test clock is advanced:
    # events of a payment or an update carry this clock's time.
    clock_offset: int = 0

    def now(self) -> int:
        return int(time.time()) + self.clock_offset


LEDGER = web.AppKey("stripe_billing_ledger", Ledger)
TARGET = web.AppKey("stripe_billing_target", WebhookTarget)


def nested(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (`a[b][0][c]=v`) back into objects; numeric keys make lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        head = key.split("[", 1)[0]
        parts = [head, *_KEY_PART.findall(key)]
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _lists(root)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    values = {key: _lists(value) for key, value in node.items()}
    if values and all(key.isdigit() for key in values):
        return [values[key] for key in sorted(values, key=int)]
    return values


def required_param(params: dict[str, Any], name: str) -> Any:
    if params.get(name) in (None, ""):
        raise StripeApiError(
            400, f"Missing required param: {name}.", code="parameter_missing", param=name
        )
    return params[name]


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A test secret key on the API routes, then Stripe's error body for every refusal."""
    if "/v1/" in request.path:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not key.startswith(TEST_KEY_PREFIX):
            refusal = StripeApiError(401, "Invalid API Key provided.", code="api_key_invalid")
            return web.json_response(refusal.body(), status=refusal.status)
    try:
        return await handler(request)
    except StripeApiError as exc:
        return web.json_response(exc.body(), status=exc.status)


def request_base(request: web.Request, route_path: str) -> str:
    """This sandbox's public base URL, from the request that reached `route_path`."""
    return str(request.url.with_query(None)).removesuffix(route_path)


async def api_call(request: web.Request, create: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """Parse the form, replay an idempotent request, or create and remember the answer."""
    form = await request.post()
    params = nested((key, str(value)) for key, value in form.items())
    ledger = request.app[LEDGER]
    key = request.headers.get("Idempotency-Key")
    fingerprint = hashlib.sha256(
        (request.path + json.dumps(params, sort_keys=True)).encode()
    ).hexdigest()
    if key is not None and key in ledger.replies:
        seen, reply = ledger.replies[key]
        if seen != fingerprint:
            raise StripeApiError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they "
                "were first used with.",
                code="idempotency_key_in_use",
            )
        return web.json_response(reply, headers={"Idempotent-Replayed": "true"})
    reply = create(params)
    if key is not None:
        ledger.replies[key] = (fingerprint, reply)
    return web.json_response(reply)


async def create_customer(request: web.Request) -> web.Response:
    ledger = request.app[LEDGER]

    def create(params: dict[str, Any]) -> dict[str, Any]:
        customer_id = sample_events.new_id("cus")
        customer: dict[str, Any] = {
            "id": customer_id,
            "object": "customer",
            "email": params.get("email"),
            "metadata": params.get("metadata") or {},
            "created": int(time.time()),
            "livemode": False,
        }
        ledger.customers[customer_id] = customer
        return customer

    return await api_call(request, create)


def _customer(ledger: Ledger, params: dict[str, Any]) -> str:
    customer = str(required_param(params, "customer"))
    if customer not in ledger.customers:
        raise StripeApiError(
            400, f"No such customer: '{customer}'", code="resource_missing", param="customer"
        )
    return customer


def _line_item(params: dict[str, Any]) -> dict[str, Any]:
    items = params.get("line_items")
    if not isinstance(items, list) or len(items) != 1:
        raise StripeApiError(
            400, "line_items needs one item.", code="parameter_invalid_empty", param="line_items"
        )
    price = items[0].get("price_data") or {}
    interval = (price.get("recurring") or {}).get("interval")
    if interval not in PERIOD_S:
        raise StripeApiError(
            400,
            "You must specify `recurring` with an interval in subscription mode.",
            code="parameter_missing",
            param="line_items[0][price_data][recurring]",
        )
    amount = str(price.get("unit_amount", ""))
    if not amount.isdigit():
        raise StripeApiError(
            400,
            "Invalid integer: unit_amount",
            code="parameter_invalid_integer",
            param="line_items[0][price_data][unit_amount]",
        )
    return {
        "currency": str(required_param(price, "currency")),
        "unit_amount": int(amount),
        "interval": interval,
        "name": str((price.get("product_data") or {}).get("name", "")),
        "quantity": int(items[0].get("quantity", 1)),
    }


async def create_session(request: web.Request) -> web.Response:
    ledger = request.app[LEDGER]
    base = request_base(request, "/v1/checkout/sessions")

    def create(params: dict[str, Any]) -> dict[str, Any]:
        if params.get("mode") != "subscription":
            raise StripeApiError(
                400,
                "This sandbox serves subscription mode only.",
                code="parameter_invalid",
                param="mode",
            )
        customer = _customer(ledger, params)
        item = _line_item(params)
        success, cancel = required_param(params, "success_url"), params.get("cancel_url")
        session_id = sample_events.new_id("cs_test")
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "subscription",
            "status": "open",
            "payment_status": "unpaid",
            "customer": customer,
            "client_reference_id": params.get("client_reference_id"),
            "currency": item["currency"],
            "amount_subtotal": item["unit_amount"] * item["quantity"],
            "amount_total": item["unit_amount"] * item["quantity"],
            "metadata": params.get("metadata") or {},
            "subscription": None,
            "success_url": success,
            "cancel_url": cancel,
            "url": f"{base}/checkout/{session_id}",
            "created": int(time.time()),
            "expires_at": int(time.time()) + 86_400,
            "livemode": False,
            # What paying needs later; Stripe keeps it too, if not on the session object.
            "_item": item,
            "_subscription_metadata": (params.get("subscription_data") or {}).get("metadata") or {},
        }
        ledger.sessions[session_id] = session
        return public_view(session)

    return await api_call(request, create)


def public_view(obj: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if not key.startswith("_")}


async def create_portal(request: web.Request) -> web.Response:
    ledger = request.app[LEDGER]
    base = request_base(request, "/v1/billing_portal/sessions")

    def create(params: dict[str, Any]) -> dict[str, Any]:
        customer = _customer(ledger, params)
        configuration = params.get("configuration") or _default_configuration(ledger)
        if configuration not in ledger.configurations:
            raise StripeApiError(
                400,
                f"No such configuration: '{configuration}'",
                code="resource_missing",
                param="configuration",
            )
        portal_id = sample_events.new_id("bps")
        portal = {
            "id": portal_id,
            "object": "billing_portal.session",
            "configuration": configuration,
            "created": int(time.time()),
            "customer": customer,
            "flow": None,
            "livemode": False,
            "locale": None,
            "on_behalf_of": None,
            "return_url": params.get("return_url"),
            "url": f"{base}/portal/{portal_id}",
        }
        ledger.portals[portal_id] = portal
        return portal

    return await api_call(request, create)


def _enabled(features: dict[str, Any], name: str) -> bool:
    return str((features.get(name) or {}).get("enabled", "false")).lower() == "true"


def _configuration(params: dict[str, Any], *, is_default: bool) -> dict[str, Any]:
    """A billing_portal.configuration as the API reference shows it, from the create form."""
    features = params.get("features")
    if not isinstance(features, dict):
        raise StripeApiError(
            400, "Missing required param: features.", code="parameter_missing", param="features"
        )
    cancel = features.get("subscription_cancel") or {}
    now = int(time.time())
    return {
        "id": sample_events.new_id("bpc"),
        "object": "billing_portal.configuration",
        "active": True,
        "application": None,
        "business_profile": {
            "headline": None,
            "privacy_policy_url": None,
            "terms_of_service_url": None,
        },
        "created": now,
        "default_return_url": params.get("default_return_url"),
        "features": {
            "customer_update": {
                "allowed_updates": (features.get("customer_update") or {}).get(
                    "allowed_updates", []
                ),
                "enabled": _enabled(features, "customer_update"),
            },
            "invoice_history": {"enabled": _enabled(features, "invoice_history")},
            "payment_method_update": {"enabled": _enabled(features, "payment_method_update")},
            "subscription_cancel": {
                "enabled": _enabled(features, "subscription_cancel"),
                "mode": cancel.get("mode", "at_period_end"),
                "proration_behavior": cancel.get("proration_behavior", "none"),
            },
            "subscription_update": {
                "default_allowed_updates": [],
                "enabled": _enabled(features, "subscription_update"),
                "proration_behavior": "none",
            },
        },
        "is_default": is_default,
        "livemode": False,
        "login_page": {"enabled": False, "url": None},
        "metadata": params.get("metadata") or {},
        "updated": now,
    }


def _default_configuration(ledger: Ledger) -> str:
    """The account's default configuration (the Dashboard's settings), made on first use: it
    lets customers switch plans, as Stripe's default portal can."""
    for configuration in ledger.configurations.values():
        if configuration["is_default"]:
            return str(configuration["id"])
    default = _configuration(
        {"features": {name: {"enabled": "true"} for name in _FEATURES}}, is_default=True
    )
    ledger.configurations[default["id"]] = default
    return str(default["id"])


_FEATURES = (
    "customer_update",
    "invoice_history",
    "payment_method_update",
    "subscription_cancel",
    "subscription_update",
)


async def create_configuration(request: web.Request) -> web.Response:
    ledger = request.app[LEDGER]

    def create(params: dict[str, Any]) -> dict[str, Any]:
        configuration = _configuration(params, is_default=False)
        ledger.configurations[configuration["id"]] = configuration
        return configuration

    return await api_call(request, create)


async def create_price(request: web.Request) -> web.Response:
    ledger = request.app[LEDGER]

    def create(params: dict[str, Any]) -> dict[str, Any]:
        interval = (params.get("recurring") or {}).get("interval")
        amount = str(params.get("unit_amount", ""))
        if not amount.isdigit():
            raise StripeApiError(
                400,
                "Invalid integer: unit_amount",
                code="parameter_invalid_integer",
                param="unit_amount",
            )
        product = params.get("product") or sample_events.new_id("prod")
        if not params.get("product") and not (params.get("product_data") or {}).get("name"):
            raise StripeApiError(
                400, "Missing required param: product.", code="parameter_missing", param="product"
            )
        price_id = sample_events.new_id("price")
        price: dict[str, Any] = {
            "id": price_id,
            "object": "price",
            "active": True,
            "currency": str(required_param(params, "currency")),
            "unit_amount": int(amount),
            "recurring": (
                {"interval": interval, "interval_count": 1} if interval in PERIOD_S else None
            ),
            "type": "recurring" if interval in PERIOD_S else "one_time",
            "product": product,
            "metadata": params.get("metadata") or {},
            "created": int(time.time()),
            "livemode": False,
        }
        ledger.prices[price_id] = price
        return price

    return await api_call(request, create)


def _held_subscription(request: web.Request) -> dict[str, Any]:
    subscription_id = request.match_info["subscription_id"]
    subscription = request.app[LEDGER].subscriptions.get(subscription_id)
    if subscription is None:
        raise StripeApiError(
            404, f"No such subscription: '{subscription_id}'", code="resource_missing", param="id"
        )
    return subscription


async def retrieve_subscription(request: web.Request) -> web.Response:
    return web.json_response(_held_subscription(request))


def _update_items(ledger: Ledger, subscription: dict[str, Any], items: Any) -> None:
    """Each `items[n]` names one of the subscription's items by id and gives it a price."""
    held = {item["id"]: item for item in subscription["items"]["data"]}
    for index, change in enumerate(items if isinstance(items, list) else []):
        item = held.get(change.get("id"))
        if item is None:
            raise StripeApiError(
                400,
                f"No such subscription item: '{change.get('id')}'",
                code="resource_missing",
                param=f"items[{index}][id]",
            )
        price = ledger.prices.get(change.get("price"))
        if price is None:
            raise StripeApiError(
                400,
                f"No such price: '{change.get('price')}'",
                code="resource_missing",
                param=f"items[{index}][price]",
            )
        if price["recurring"] is None:
            raise StripeApiError(
                400,
                "The price specified is not recurring.",
                code="parameter_invalid",
                param=f"items[{index}][price]",
            )
        item["price"] = {
            key: price[key]
            for key in ("id", "object", "currency", "unit_amount", "recurring", "product")
        }


async def update_subscription(request: web.Request) -> web.Response:
    ledger = request.app[LEDGER]
    subscription = _held_subscription(request)

    def update(params: dict[str, Any]) -> dict[str, Any]:
        proration = params.get("proration_behavior", "create_prorations")
        if proration not in PRORATIONS:
            raise StripeApiError(
                400,
                f"Invalid proration_behavior: must be one of {', '.join(PRORATIONS)}",
                code="parameter_invalid",
                param="proration_behavior",
            )
        before = copy.deepcopy(subscription)
        _update_items(ledger, subscription, params.get("items"))
        for key, value in (params.get("metadata") or {}).items():
            if value == "":
                subscription["metadata"].pop(key, None)  # an empty value unsets the key
            else:
                subscription["metadata"][key] = value
        changed = {
            key: before[key] for key in ("items", "metadata") if before[key] != subscription[key]
        }
        event = sample_events.stripe_event(
            "customer.subscription.updated", copy.deepcopy(subscription), created=ledger.now()
        )
        event["data"]["previous_attributes"] = changed
        _send_later(request, event)
        return copy.deepcopy(subscription)

    return await api_call(request, update)


def _send_later(request: web.Request, event: dict[str, Any]) -> None:
    """Post `event` once the API call has answered (Stripe's events follow its calls)."""
    ledger, target = request.app[LEDGER], webhook_target(request)

    async def send() -> None:
        try:
            await deliver_events(target, [event])
        except (aiohttp.ClientError, web.HTTPException) as exc:
            ledger.undelivered.append((event, str(exc)))
            return
        ledger.posted.append(event)

    task = asyncio.get_running_loop().create_task(send())
    ledger.sending.add(task)
    task.add_done_callback(ledger.sending.discard)


def sandbox_page(title: str, body: str) -> web.Response:
    return web.Response(
        text=f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title></head><body><p><strong>SANDBOX</strong>: no real payment.</p>{body}"
        "</body></html>",
        content_type="text/html",
    )


def open_session(request: web.Request) -> dict[str, Any]:
    session = request.app[LEDGER].sessions.get(request.match_info["session_id"])
    if session is None:
        raise web.HTTPNotFound(text="no such checkout session")
    return session


async def checkout_page(request: web.Request) -> web.Response:
    session = open_session(request)
    item = session["_item"]
    amount = (
        f"{item['unit_amount']} {item['currency'].upper()} (minor units) per {item['interval']}"
    )
    return sandbox_page(
        "Sandbox checkout",
        f"<p>{html.escape(item['name'])}: {html.escape(amount)}</p>"
        f'<form method="post" action="{html.escape(request.path)}/pay">'
        '<button type="submit">Pay (sandbox)</button></form>',
    )


def _subscription(session: dict[str, Any], invoice_id: str, now: int) -> dict[str, Any]:
    item = session["_item"]
    return {
        "id": sample_events.new_id("sub"),
        "object": "subscription",
        "customer": session["customer"],
        "status": "active",
        "collection_method": "charge_automatically",
        "metadata": session["_subscription_metadata"],
        "items": {
            "object": "list",
            "data": [
                {
                    "id": sample_events.new_id("si"),
                    "object": "subscription_item",
                    "quantity": item["quantity"],
                    "current_period_start": now,
                    "current_period_end": now + PERIOD_S[item["interval"]],
                    "price": {
                        "id": sample_events.new_id("price"),
                        "object": "price",
                        "currency": item["currency"],
                        "unit_amount": item["unit_amount"],
                        "recurring": {"interval": item["interval"], "interval_count": 1},
                        "product": sample_events.new_id("prod"),
                    },
                }
            ],
        },
        "cancel_at_period_end": False,
        "cancel_at": None,
        "canceled_at": None,
        "created": now,
        "start_date": now,
        "latest_invoice": invoice_id,
        "livemode": False,
    }


def webhook_target(request: web.Request) -> WebhookTarget:
    """The webhook endpoint events go to: the one the app was made with, else the ingress this
    sandbox is mounted on, with its first Stripe endpoint secret."""
    if TARGET in request.app:
        return request.app[TARGET]
    secrets_ = request.config_dict[SETTINGS].stripe_secrets()
    if not secrets_:
        raise web.HTTPServiceUnavailable(text="no Stripe webhook secret to sign events with")
    return WebhookTarget(str(request.url.origin()) + "/webhooks/stripe", secrets_[0])


async def deliver_events(target: WebhookTarget, events: list[dict[str, Any]]) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
        for event in events:
            body = json.dumps(event)
            headers = {
                "Content-Type": "application/json",
                "Stripe-Signature": stripe.sign(body, target.secret),
            }
            async with client.post(target.url, data=body, headers=headers) as response:
                if response.status != 200:
                    raise web.HTTPBadGateway(text=f"webhook answered {response.status}")


async def pay(request: web.Request) -> web.Response:
    session = open_session(request)
    if session["status"] != "open":
        raise web.HTTPConflict(text="this checkout session is not open")
    ledger = request.app[LEDGER]
    now = ledger.now()
    item = session["_item"]
    customer = ledger.customers[session["customer"]]
    invoice = sample_events.invoice(
        subscription_id="",
        amount=item["unit_amount"] * item["quantity"],
        currency=item["currency"],
        email=str(customer.get("email") or ""),
        metadata=session["_subscription_metadata"],
    )
    subscription = _subscription(session, invoice["id"], now)
    invoice["parent"]["subscription_details"]["subscription"] = subscription["id"]
    invoice.update(customer=customer["id"], billing_reason="subscription_create", created=now)
    session.update(status="complete", payment_status="paid", subscription=subscription["id"])
    ledger.subscriptions[subscription["id"]] = subscription
    events = [
        sample_events.stripe_event("customer.subscription.created", subscription, created=now),
        sample_events.stripe_event("checkout.session.completed", public_view(session), created=now),
        sample_events.stripe_event("invoice.paid", invoice, created=now),
    ]
    await deliver_events(webhook_target(request), events)
    ledger.posted.extend(events)
    success = str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session["id"])
    raise web.HTTPSeeOther(success)


async def portal_page(request: web.Request) -> web.Response:
    portal = request.app[LEDGER].portals.get(request.match_info["portal_id"])
    if portal is None:
        raise web.HTTPNotFound(text="no such portal session")
    back = html.escape(str(portal["return_url"] or ""))
    features = request.app[LEDGER].configurations[portal["configuration"]]["features"]
    offered = [name for name in _FEATURES if features[name]["enabled"]]
    listed = "".join(f"<li>{html.escape(name)}</li>" for name in offered)
    return sandbox_page(
        "Sandbox billing portal",
        f'<p>This portal offers:</p><ul>{listed}</ul><p><a href="{back}">Return</a></p>',
    )


async def _stop_sending(app: web.Application) -> None:
    """Events still being posted when the sandbox stops are dropped, as a Stripe outage would."""
    pending = list(app[LEDGER].sending)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def stripe_billing_app(*, target: WebhookTarget | None = None) -> web.Application:
    """The sub-app; `target` sends events somewhere else than the ingress it is mounted on."""
    app = web.Application(middlewares=[api_errors])
    app[LEDGER] = Ledger()
    app.on_cleanup.append(_stop_sending)
    if target is not None:
        app[TARGET] = target
    app.router.add_post("/v1/customers", create_customer)
    app.router.add_post("/v1/checkout/sessions", create_session)
    app.router.add_post("/v1/prices", create_price)
    app.router.add_get("/v1/subscriptions/{subscription_id}", retrieve_subscription)
    app.router.add_post("/v1/subscriptions/{subscription_id}", update_subscription)
    app.router.add_post("/v1/billing_portal/configurations", create_configuration)
    app.router.add_post("/v1/billing_portal/sessions", create_portal)
    app.router.add_get("/checkout/{session_id}", checkout_page)
    app.router.add_post("/checkout/{session_id}/pay", pay)
    app.router.add_get("/portal/{portal_id}", portal_page)
    return app


def with_billing_sandbox(settings: Settings, url: str | None) -> Settings:
    """`settings` with subscriptions sent to the sandbox at `url` (none: unchanged), with the
    sandbox's test key when no Stripe key is set."""
    if url is None:
        return settings
    update: dict[str, Any] = {"billing_stripe_api_url": url}
    if settings.stripe_secret_key is None:
        update["stripe_secret_key"] = SecretStr(SANDBOX_SECRET_KEY)
    return settings.model_copy(update=update)
