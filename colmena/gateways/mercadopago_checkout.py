"""Mercado Pago Checkout Pro preferences through the official `mercadopago` SDK.

A preference is one item at the order's amount (decimal, as Mercado Pago takes it: whole pesos
for COP and CLP), the buyer's email, `external_reference` = the order id (what comes back on
the payment, and the only thing colmena reads from it to find the order), back URLs to colmena's
pages and the notification URL of colmena's webhook. Installments: `payment_methods.installments`
caps what the buyer is offered and `default_installments` preselects the count ordered; without
installments the cap is 1. Nothing is excluded, so Checkout Pro offers every method of the
seller's site: in Colombia (COP) that includes PSE bank transfers, which Checkout Pro runs on
its own pages (the bank choice and the payer's identification are asked there).

The client is colmena's Mercado Pago client (moved base URL, SDK retries off); the SDK blocks,
so the call runs in a thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from colmena.domain.catalog import decimal_amount
from colmena.gateways.checkout_session import (
    CheckoutRefused,
    CheckoutUnavailable,
    ProviderSession,
    SessionRequest,
)
from colmena.gateways.mercadopago import MercadoPagoClient, MercadoPagoError, MercadoPagoUnavailable

PROVIDER = "mercadopago"


def preference_body(request: SessionRequest, *, product_ref: str) -> dict[str, Any]:
    """The Checkout Pro preference for one order."""
    installments = request.installments or 1
    return {
        "items": [
            {
                "id": product_ref,
                "title": request.title,
                "quantity": 1,
                "currency_id": request.currency,
                "unit_price": float(decimal_amount(request.amount, request.currency)),
            }
        ],
        "payer": {"email": request.buyer_email},
        "external_reference": request.order_id,
        "back_urls": {
            "success": request.success_url,
            "failure": request.cancel_url,
            "pending": request.pending_url,
        },
        "auto_return": "approved",
        "notification_url": request.notification_url,
        "payment_methods": {
            "installments": installments,
            "default_installments": installments,
        },
    }


class PreferenceClient(MercadoPagoClient):
    """colmena's Mercado Pago client, able to create Checkout Pro preferences."""

    def create_preference(self, preference: dict[str, Any]) -> dict[str, Any]:
        return self._checked(lambda: self._sdk.preference().create(preference), "preference")


async def create_preference(
    request: SessionRequest, *, product_ref: str, access_token: str, api_url: str, timeout_s: float
) -> ProviderSession:
    """Create the preference; CheckoutUnavailable or CheckoutRefused when Mercado Pago fails."""
    client = PreferenceClient(access_token=access_token, base_url=api_url, timeout_s=timeout_s)
    body = preference_body(request, product_ref=product_ref)
    try:
        preference = await asyncio.to_thread(client.create_preference, body)
    except MercadoPagoUnavailable as exc:
        raise CheckoutUnavailable(PROVIDER, str(exc)) from None
    except MercadoPagoError as exc:
        raise CheckoutRefused(PROVIDER, str(exc)) from None
    url = preference.get("init_point")
    if not preference.get("id") or not url:
        raise CheckoutRefused(PROVIDER, "the preference has no id or init_point")
    return ProviderSession(provider_ref=str(preference["id"]), redirect_url=str(url))
