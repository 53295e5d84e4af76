"""Checkout settings: the providers' API keys and URLs, and where buyers come back to.

Stripe takes its secret key (sk_...); Mercado Pago's access token and API URL are the payments
settings' (one token reads payments and creates preferences); Bitso's "Pay with Bitso" takes an
API key and secret, which sign every request (HMAC-SHA256, as Bitso's API documents). The API
URLs move for tests and for `colmena dev`, whose sandboxes play each provider.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator

STRIPE_PUBLIC_API = "https://api.stripe.com"
BITSO_PUBLIC_API = "https://api.bitso.com"


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError("expected an http(s) URL such as https://api.example.com")
    return value.rstrip("/")


class CheckoutSettings(BaseModel):
    if TYPE_CHECKING:

        @property
        def license_links_base(self) -> str: ...  # LicenseSettings'

    stripe_secret_key: SecretStr | None = Field(
        default=None, description="Stripe secret key (sk_...) that creates Checkout Sessions"
    )
    stripe_api_url: str = Field(default=STRIPE_PUBLIC_API, description="Stripe's API base URL")
    bitso_api_key: SecretStr | None = Field(
        default=None, description="Bitso API key that creates Pay with Bitso payment intents"
    )
    bitso_api_secret: SecretStr | None = Field(
        default=None, description="the Bitso API secret that signs each request"
    )
    bitso_api_url: str = Field(default=BITSO_PUBLIC_API, description="Bitso's API base URL")
    bitso_intent_duration: str = Field(
        default="PT1H",
        pattern=r"^PT([1-9]\d*[HM])+$",
        description="how long a payment intent stays payable (ISO 8601 duration)",
    )
    checkout_timeout_s: float = Field(
        default=10.0, gt=0, le=60, description="a provider must create the session within this"
    )
    checkout_order_ttl_hours: float = Field(
        default=24.0,
        gt=0,
        le=24 * 30,
        description="an order not paid within this is marked expired (a payment arriving later "
        "still settles it)",
    )
    checkout_base_url: str | None = Field(
        default=None,
        description="public base URL of the checkout pages and the Mercado Pago notification "
        "URL; unset: the license links' base (COLMENA_LICENSE_BASE_URL, else this ingress)",
    )

    @field_validator("stripe_api_url", "bitso_api_url", "checkout_base_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return _http_url(value)

    @property
    def checkout_links_base(self) -> str:
        """Where providers send buyers back (and Mercado Pago its notifications)."""
        return self.checkout_base_url or self.license_links_base
