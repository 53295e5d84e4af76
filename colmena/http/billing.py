"""Tenants paying for a plan: `POST /api/v1/billing/checkout`, `POST /api/v1/billing/portal`.

Both sit behind the tenant API's auth (tenant tokens and account access tokens alike). A
checkout sells the catalog's plan product for the asked plan at its live recurring price in the
asked currency (COLMENA_BILLING_CURRENCY by default) as a Stripe Checkout Session in
subscription mode, for the tenant's Stripe customer (created on its first checkout, then kept).
Whatever the webhooks later trust comes from here, never from the body: the tenant id from the
token, the plan and the price from the catalog. The plan then moves with the subscription's
events (colmena.domain.plans), not with this answer.

A tenant whose plan already comes from a live subscription switches plans here too, never with a
second subscription (that would bill it twice): the same route updates the subscription's item
to the new plan's catalog price, prorated, and its `metadata.plan` with it, and answers 200
(`changed`, `effective: "now"`); the plan moves when Stripe's `customer.subscription.updated`
arrives, ordered like every plan change by the event's time (a stale one is recorded, not
applied). The switch keeps the subscription's currency. A subscription that is not active or
trialing (past_due: a renewal is being retried) is settled in the portal first (409).

The portal opens with colmena's portal configuration (made once, kept in
billing_portal_configurations): cancellation, payment methods and invoices, but no plan switch,
since a switch made there would leave the subscription's `metadata.plan` behind.
`Idempotency-Key` makes a retried checkout or switch return the same session or update (the key
goes on to Stripe, scoped to the tenant). A Stripe that does not answer is a 503; nothing is
stored but the customer id.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import structlog
from aiohttp import web

from colmena.config import Settings
from colmena.config.billing_settings import RETURN_PATH
from colmena.domain.money import to_minor
from colmena.domain.plans import SWITCHABLE, paying_subscription
from colmena.domain.tenants import FREE_PLAN
from colmena.gateways.stripe_billing import (
    PORTAL_FEATURES_VERSION,
    PlanSwitch,
    Redirect,
    StripeBilling,
    StripeBillingError,
    StripeBillingMissing,
    StripeBillingUnavailable,
    SubscriptionCheckout,
    SubscriptionState,
)
from colmena.http.context import SETTINGS
from colmena.http.errors import ApiError
from colmena.http.payloads import field_errors, json_body
from colmena.http.tenant_auth import TENANT, tenant_gone
from colmena.http.tenant_limits import tenant_connection
from colmena.http.tenants import PREFIX, tenant_app
from colmena.store import billing as store
from colmena.store import catalog
from colmena.store import tenants as tenants_store
from colmena.store.catalog import LivePrice, Product
from colmena.store.tenants import Tenant

log = structlog.get_logger(__name__)

T = TypeVar("T")

GATEWAY = web.AppKey("stripe_billing", StripeBilling)
CURRENCY = re.compile(r"^[A-Z]{3}$")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
RETURN_PAGES = {
    "success": "Thank you: your plan changes as soon as Stripe confirms the payment.",
    "cancel": "The checkout was cancelled; your plan is unchanged.",
    "portal": "Back from the billing portal; changes show on your plan once Stripe confirms them.",
}


def _return_base(settings: Settings) -> str:
    return settings.billing_return_url or settings.checkout_links_base + RETURN_PATH


def _gateway(request: web.Request) -> StripeBilling:
    gateway = request.config_dict.get(GATEWAY)
    if gateway is None:
        raise ApiError(503, "not_configured", "COLMENA_STRIPE_SECRET_KEY is not set on this server")
    return gateway


def _checkout_request(body: Any) -> tuple[str, str | None]:
    """(plan, currency or None when not asked) from the body, or a 422 naming each field that
    is wrong."""
    if not isinstance(body, dict):
        raise field_errors([("body", "must be a JSON object")], "the request is not valid")
    errors = [(name, "unknown field") for name in body if name not in ("plan", "currency")]
    plan, currency = body.get("plan"), body.get("currency")
    if not isinstance(plan, str) or not plan:
        errors.append(("plan", 'required: the plan to subscribe to, such as "pro"'))
    elif plan == FREE_PLAN:
        errors.append(("plan", "the free plan is not sold; cancel in the billing portal instead"))
    if currency is not None and (not isinstance(currency, str) or not CURRENCY.fullmatch(currency)):
        errors.append(("currency", 'an ISO 4217 code in capitals, such as "USD"'))
    if errors:
        raise field_errors(errors, "the request is not valid")
    return str(plan), currency


def _idempotency_key(request: web.Request, tenant_id: str) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(
            400, "invalid_idempotency_key", "Idempotency-Key: 1 to 200 visible ASCII characters"
        )
    return f"colmena-billing-{tenant_id}-{key}"


async def _stripe(call: Awaitable[T]) -> T:
    """Await a gateway call; Stripe's failures become the tenant's 503 or 502."""
    try:
        return await call
    except StripeBillingUnavailable as exc:
        log.warning("stripe unavailable for billing", error=str(exc))
        raise ApiError(
            503,
            "provider_unavailable",
            "Stripe is not answering; retry shortly",
            headers={"Retry-After": "5"},
        ) from None
    except StripeBillingError as exc:
        log.error("stripe refused a billing request", error=str(exc))
        raise ApiError(502, "provider_refused", "Stripe refused the request") from None


async def _customer(request: web.Request, gateway: StripeBilling, tenant: Any) -> str:
    """The tenant's Stripe customer, created (once) on its first checkout."""
    async with tenant_connection(request) as conn:
        customer = await store.customer_of(conn, tenant.id)
    if customer is not None:
        return customer
    created = await _stripe(gateway.create_customer(tenant_id=tenant.id, email=tenant.email))
    async with tenant_connection(request) as conn:
        return await store.remember_customer(conn, tenant.id, created)


async def _recurring_price(request: web.Request, product: Product, currency: str) -> LivePrice:
    """The plan product's live recurring price in `currency`, or a 404 (none is on sale)."""
    async with tenant_connection(request) as conn:
        live = await catalog.live_price(conn, product.ref, None, currency)
    if live is None or live.price.billing_period is None:
        raise ApiError(
            404, "price_not_found", f"plan {product.plan} has no recurring price in {currency}"
        )
    return live


def _price_view(live: LivePrice, currency: str) -> dict[str, Any]:
    return {
        "currency": currency,
        "amount": format(live.price.amount, "f"),
        "billing_period": live.price.billing_period,
    }


async def checkout(request: web.Request) -> web.Response:
    settings = request.config_dict[SETTINGS]
    gateway = _gateway(request)
    plan, asked_currency = _checkout_request(await json_body(request))
    key = _idempotency_key(request, request[TENANT].id)
    async with tenant_connection(request) as conn:
        tenant = await tenants_store.get_tenant(conn, request[TENANT].id)
        if tenant is None:
            raise tenant_gone()
        if tenant.plan == plan:
            raise ApiError(409, "already_on_plan", f"the tenant is on plan {plan} already")
        product = await catalog.product_for_plan(conn, plan)
    if product is None:
        raise ApiError(404, "plan_not_sold", f"no plan {plan!r} is for sale")
    subscription_id = paying_subscription(tenant.plan, tenant.plan_source)
    if subscription_id is not None:
        return await _switch(
            request, gateway, tenant, product, subscription_id, asked_currency, key
        )
    currency = asked_currency or settings.billing_currency
    live = await _recurring_price(request, product, currency)
    customer = await _customer(request, gateway, tenant)
    back = _return_base(settings)
    session = await _stripe(
        gateway.create_checkout(
            SubscriptionCheckout(
                customer_id=customer,
                tenant_id=tenant.id,
                plan=plan,
                product_ref=product.ref,
                product_name=product.name,
                currency=currency,
                unit_amount=to_minor(live.price.amount, currency),
                interval=str(live.price.billing_period),
                success_url=back + "?status=success&session_id={CHECKOUT_SESSION_ID}",
                cancel_url=back + "?status=cancel",
            ),
            idempotency_key=key,
        )
    )
    log.info("billing checkout created", plan=plan, session_id=session.id, currency=currency)
    return web.json_response(
        {"session_id": session.id, "url": session.url, "plan": plan, **_price_view(live, currency)},
        status=201,
    )


async def _subscription(
    gateway: StripeBilling, tenant: Tenant, subscription_id: str
) -> SubscriptionState:
    """The subscription the tenant's plan comes from; one Stripe does not know is a 409 (a
    second subscription could bill the tenant twice, so no checkout either)."""
    try:
        return await gateway.subscription(subscription_id)
    except StripeBillingMissing:
        raise ApiError(
            409,
            "subscription_unknown",
            f"Stripe knows no subscription {subscription_id}, which plan {tenant.plan} comes "
            "from: ask the operator",
        ) from None


async def _switch(
    request: web.Request,
    gateway: StripeBilling,
    tenant: Tenant,
    product: Product,
    subscription_id: str,
    asked_currency: str | None,
    key: str | None,
) -> web.Response:
    """Move the tenant's live subscription to `product`'s plan. A subscription already switched
    to it (its event not in yet, or a retried request) is answered the same, not switched twice."""
    plan = str(product.plan)
    state = await _stripe(_subscription(gateway, tenant, subscription_id))
    if state.status not in SWITCHABLE:
        raise ApiError(
            409,
            "subscription_not_active",
            f"the subscription is {state.status}: settle it in the billing portal "
            "(POST /api/v1/billing/portal) before switching plans",
        )
    currency = state.currency.upper()
    if asked_currency is not None and asked_currency != currency:
        raise field_errors(
            [("currency", f"the subscription is billed in {currency}; a switch keeps it")],
            "the request is not valid",
        )
    live = await _recurring_price(request, product, currency)
    if state.plan != plan:
        state = await _stripe(
            gateway.switch_plan(
                PlanSwitch(
                    subscription_id=state.id,
                    item_id=state.item_id,
                    tenant_id=tenant.id,
                    plan=plan,
                    product_ref=product.ref,
                    product_name=product.name,
                    currency=currency,
                    unit_amount=to_minor(live.price.amount, currency),
                    interval=str(live.price.billing_period),
                ),
                idempotency_key=key,
            )
        )
        log.info("billing plan switched", old_plan=tenant.plan, plan=plan, subscription=state.id)
    return web.json_response(
        {
            "changed": True,
            "plan": plan,
            "effective": "now",
            "subscription_id": state.id,
            "status": state.status,
            **_price_view(live, currency),
        }
    )


async def _open_portal(
    request: web.Request, gateway: StripeBilling, customer: str, back: str
) -> Redirect:
    """A portal session on colmena's configuration, made (once) when none is kept or Stripe no
    longer knows the kept one."""
    async with tenant_connection(request) as conn:
        configuration = await store.portal_configuration(conn, PORTAL_FEATURES_VERSION)
    if configuration is not None:
        try:
            return await gateway.create_portal(
                customer_id=customer, return_url=back, configuration_id=configuration
            )
        except StripeBillingMissing:
            log.warning("kept portal configuration unknown to Stripe", configuration=configuration)
    configuration = await gateway.create_portal_configuration()
    async with tenant_connection(request) as conn:
        await store.remember_portal_configuration(conn, PORTAL_FEATURES_VERSION, configuration)
    log.info("billing portal configuration created", configuration=configuration)
    return await gateway.create_portal(
        customer_id=customer, return_url=back, configuration_id=configuration
    )


async def portal(request: web.Request) -> web.Response:
    gateway = _gateway(request)
    tenant = request[TENANT]
    async with tenant_connection(request) as conn:
        customer = await store.customer_of(conn, tenant.id)
    if customer is None:
        raise ApiError(
            409, "no_customer", "no billing account yet: POST /api/v1/billing/checkout first"
        )
    back = _return_base(request.config_dict[SETTINGS]) + "?status=portal"
    session = await _stripe(_open_portal(request, gateway, customer, back))
    log.info("billing portal session created", session_id=session.id)
    return web.json_response({"session_id": session.id, "url": session.url}, status=201)


async def return_page(request: web.Request) -> web.Response:
    """Where Stripe sends the tenant back: what happens next, nothing read from the query but
    which of the fixed sentences to show."""
    said = RETURN_PAGES.get(request.query.get("status", ""), "Back from Stripe.")
    return web.Response(
        text=f'<!doctype html><html><head><meta charset="utf-8"><title>colmena billing</title>'
        f"</head><body><p>{said}</p></body></html>",
        content_type="text/html",
    )


async def _gateway_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if settings.stripe_secret_key is None:
        yield
        return
    gateway = StripeBilling(
        secret_key=settings.stripe_secret_key.get_secret_value(),
        api_url=settings.billing_stripe_api_url or settings.stripe_api_url,
        timeout_s=settings.checkout_timeout_s,
    )
    app[GATEWAY] = gateway
    try:
        yield
    finally:
        await gateway.close()


def _routes(billing_app: web.Application) -> None:
    billing_app.router.add_post("/checkout", checkout)
    billing_app.router.add_post("/portal", portal)


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_gateway_ctx)
    app.add_subapp(PREFIX + "/billing", tenant_app(_routes))
    app.router.add_get(RETURN_PATH, return_page)
