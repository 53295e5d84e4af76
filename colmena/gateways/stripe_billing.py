"""Stripe for tenant plans: customers, subscription Checkout Sessions, plan switches on a live
subscription, customer portal sessions and the portal configuration they open with.

The official `stripe` library, asynchronous, on an aiohttp session this gateway owns (the
ingress closes it on shutdown). `api_url` moves the API for tests and `colmena dev`, whose
sandboxes speak Stripe's wire format. Stripe's own retries are off: the tenant's request is
waiting, so one attempt within the timeout, and a Stripe that does not answer is
`StripeBillingUnavailable` (the route answers 503 and the tenant retries; the idempotency keys
make the retry return the same customer and session).

A plan switch follows Stripe's "change the price of an existing subscription": the subscription's
one item gets a price made from the catalog's (prorated: `create_prorations`, Stripe's default,
so the difference is credited or charged on the next invoice and the billing date stays), and the
subscription's `metadata.plan` moves in the same update, so the `customer.subscription.updated`
event it causes names the new plan. The portal opens with a configuration that offers no plan
switch (`PORTAL_FEATURES`): a switch made there would keep the old `metadata.plan`, which is what
colmena reads, so tenants switch through colmena and cancel or fix payment methods in the portal.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import stripe

from colmena.errors import ColmenaError

T = TypeVar("T")

# What the customer portal offers. The version names this set in billing_portal_configurations
# (migration 0016): change the features, change the version, and a new configuration is made.
PORTAL_FEATURES_VERSION = "no-plan-switch-v1"
PORTAL_FEATURES: dict[str, Any] = {
    "subscription_update": {"enabled": False},
    "subscription_cancel": {"enabled": True, "mode": "at_period_end"},
    "payment_method_update": {"enabled": True},
    "invoice_history": {"enabled": True},
    "customer_update": {"enabled": False},  # the email is the tenant's colmena account's
}


class StripeBillingError(ColmenaError):
    """Stripe refused the request: retrying the same one will not help."""

    retryable = False


class StripeBillingUnavailable(StripeBillingError):
    """Stripe did not answer, or answered that it cannot now (5xx, 429)."""

    retryable = True


class StripeBillingMissing(StripeBillingError):
    """Stripe knows no object by an id colmena sent (`resource_missing`)."""


@dataclass(frozen=True)
class SubscriptionCheckout:
    """What a subscription Checkout Session is made of; amounts in the currency's minor units."""

    customer_id: str
    tenant_id: str
    plan: str
    product_ref: str
    product_name: str
    currency: str
    unit_amount: int
    interval: str  # month | year
    success_url: str
    cancel_url: str


@dataclass(frozen=True)
class PlanSwitch:
    """A live subscription's item moved to another plan's price; amounts in minor units."""

    subscription_id: str
    item_id: str
    tenant_id: str
    plan: str
    product_ref: str
    product_name: str
    currency: str
    unit_amount: int
    interval: str  # month | year


@dataclass(frozen=True)
class SubscriptionState:
    """What colmena reads of a subscription: its status, the plan its metadata names, and its
    one item (colmena's subscriptions have one)."""

    id: str
    status: str
    plan: str | None
    item_id: str
    currency: str


@dataclass(frozen=True)
class Redirect:
    id: str
    url: str


def plan_metadata(*, tenant_id: str, plan: str, product_ref: str) -> dict[str, str]:
    """The metadata that names a tenant's plan on sessions and subscriptions, which the webhooks
    read back (colmena.domain.payment_events)."""
    return {"tenant_id": tenant_id, "plan": plan, "product": product_ref, "product_kind": "plan"}


def _options(idempotency_key: str | None) -> stripe.RequestOptions:
    options: stripe.RequestOptions = {}
    if idempotency_key:
        options["idempotency_key"] = idempotency_key
    return options


def _subscription_state(subscription: stripe.Subscription) -> SubscriptionState:
    raw = subscription.to_dict()
    items = (raw.get("items") or {}).get("data") or []
    if len(items) != 1:
        raise StripeBillingError(f"subscription {raw.get('id')} has {len(items)} items, not one")
    plan = (raw.get("metadata") or {}).get("plan")
    return SubscriptionState(
        id=str(raw["id"]),
        status=str(raw.get("status")),
        plan=str(plan) if plan else None,
        item_id=str(items[0]["id"]),
        currency=str((items[0].get("price") or {}).get("currency") or raw.get("currency") or ""),
    )


class StripeBilling:
    def __init__(self, *, secret_key: str, api_url: str, timeout_s: float) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_url},
            http_client=stripe.AIOHTTPClient(session=self._session, timeout=None),
            max_network_retries=0,
        )

    async def close(self) -> None:
        await self._session.close()

    async def create_customer(self, *, tenant_id: str, email: str) -> str:
        """The tenant's Stripe customer; the same one for every call within Stripe's 24 h
        idempotency window, so two first checkouts at once make one customer."""
        customer = await self._call(
            self._client.v1.customers.create_async(
                {"email": email, "metadata": {"tenant_id": tenant_id}},
                {"idempotency_key": f"colmena-customer-{tenant_id}"},
            )
        )
        return str(customer.id)

    async def create_checkout(
        self, checkout: SubscriptionCheckout, *, idempotency_key: str | None
    ) -> Redirect:
        """A Checkout Session in subscription mode. The tenant and plan go in the session's and
        the subscription's metadata, so invoice.paid and customer.subscription.* name them."""
        metadata = plan_metadata(
            tenant_id=checkout.tenant_id, plan=checkout.plan, product_ref=checkout.product_ref
        )
        session = await self._call(
            self._client.v1.checkout.sessions.create_async(
                {
                    "mode": "subscription",
                    "customer": checkout.customer_id,
                    "client_reference_id": checkout.tenant_id,
                    "line_items": [
                        {
                            "quantity": 1,
                            "price_data": {
                                "currency": checkout.currency.lower(),
                                "unit_amount": checkout.unit_amount,
                                "recurring": {"interval": checkout.interval},
                                "product_data": {"name": checkout.product_name},
                            },
                        }
                    ],
                    "metadata": metadata,
                    "subscription_data": {"metadata": metadata},
                    "success_url": checkout.success_url,
                    "cancel_url": checkout.cancel_url,
                },
                _options(idempotency_key),
            )
        )
        return Redirect(str(session.id), _url(session.url))

    async def subscription(self, subscription_id: str) -> SubscriptionState:
        return _subscription_state(
            await self._call(self._client.v1.subscriptions.retrieve_async(subscription_id))
        )

    async def switch_plan(
        self, switch: PlanSwitch, *, idempotency_key: str | None
    ) -> SubscriptionState:
        """Move the subscription to `switch.plan` now, prorated. The price is made from the
        catalog's amount first (a subscription item's inline price needs a Stripe product; this
        one names the plan on the tenant's invoices), then the item and the metadata change in
        one update. With a key, a retry replays both calls instead of making them again."""
        metadata = plan_metadata(
            tenant_id=switch.tenant_id, plan=switch.plan, product_ref=switch.product_ref
        )
        price = await self._call(
            self._client.v1.prices.create_async(
                {
                    "currency": switch.currency.lower(),
                    "unit_amount": switch.unit_amount,
                    "recurring": {"interval": switch.interval},
                    "product_data": {"name": switch.product_name, "metadata": metadata},
                    "metadata": metadata,
                },
                _options(idempotency_key and f"{idempotency_key}-price"),
            )
        )
        updated = await self._call(
            self._client.v1.subscriptions.update_async(
                switch.subscription_id,
                {
                    "items": [{"id": switch.item_id, "price": str(price.id)}],
                    "proration_behavior": "create_prorations",
                    "metadata": metadata,
                },
                _options(idempotency_key),
            )
        )
        return _subscription_state(updated)

    async def create_portal_configuration(self) -> str:
        """The portal configuration of `PORTAL_FEATURES`; made once per feature set (the key
        makes two first portal sessions at once share one), then kept by the caller."""
        configuration = await self._call(
            self._client.v1.billing_portal.configurations.create_async(
                {
                    "features": PORTAL_FEATURES,  # type: ignore[typeddict-item]
                    "metadata": {"colmena_features": PORTAL_FEATURES_VERSION},
                },
                {"idempotency_key": f"colmena-portal-configuration-{PORTAL_FEATURES_VERSION}"},
            )
        )
        return str(configuration.id)

    async def create_portal(
        self, *, customer_id: str, return_url: str, configuration_id: str
    ) -> Redirect:
        portal = await self._call(
            self._client.v1.billing_portal.sessions.create_async(
                {
                    "customer": customer_id,
                    "return_url": return_url,
                    "configuration": configuration_id,
                }
            )
        )
        return Redirect(str(portal.id), _url(portal.url))

    async def _call(self, request: Awaitable[T]) -> T:
        try:
            return await request
        except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
            raise StripeBillingUnavailable(f"Stripe did not answer: {type(exc).__name__}") from None
        except stripe.StripeError as exc:
            status = exc.http_status or 0
            if status >= 500:
                raise StripeBillingUnavailable(f"Stripe answered {status}") from None
            code = exc.code or type(exc).__name__
            if code == "resource_missing":
                raise StripeBillingMissing(f"Stripe has no such object ({status} {code})") from None
            raise StripeBillingError(f"Stripe refused the request ({status} {code})") from None


def _url(value: str | None) -> str:
    if not value:
        raise StripeBillingError("Stripe answered without a URL")
    return value
