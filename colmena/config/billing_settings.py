"""Tenant billing settings: which price a plan is sold in, and where Stripe sends tenants back.

The Stripe key and API URL are the checkout's (COLMENA_STRIPE_SECRET_KEY, COLMENA_STRIPE_API_URL:
one Stripe account sells licenses and plans); COLMENA_BILLING_STRIPE_API_URL moves only the
subscription calls, which `colmena dev` serves from a sandbox of their own. After a Checkout
Session or the customer portal, Stripe returns the tenant to COLMENA_BILLING_RETURN_URL, by
default the small page colmena serves itself at /billing/return (under the checkout's public
base URL).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

RETURN_PATH = "/billing/return"


class BillingSettings(BaseModel):
    billing_currency: str = Field(
        default="USD",
        pattern=r"^[A-Z]{3}$",
        description="the plan price a billing checkout uses when the tenant names no currency",
    )
    billing_stripe_api_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s?#]+$",
        description="Stripe's API base URL for subscriptions; unset: COLMENA_STRIPE_API_URL "
        "(`colmena dev` points it at its own Stripe Billing sandbox)",
    )
    billing_return_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s?#]+$",
        description="where Stripe sends tenants back after checkout or the portal; unset: "
        f"colmena's own {RETURN_PATH} page",
    )
