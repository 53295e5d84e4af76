"""Stripe Checkout Sessions (payment mode) through the official `stripe` library.

One line item priced inline (`price_data`) at the order's amount in Stripe's minor units, so no
Stripe Price object has to mirror the catalog; the order id is the session's
`client_reference_id` and the only metadata, on the session and on its PaymentIntent (the
webhooks colmena reads carry one or the other). The buyer's Idempotency-Key is Stripe's
idempotency key, so a retried checkout gets the same session back. Installments (meses sin
intereses) are switched on for the session when the order asks for them; the buyer picks the
plan on Stripe's page. The library's own retries are off: a failure reaches the buyer as 503,
and the buyer's retry is the retry.
"""

from __future__ import annotations

from typing import Any

import stripe

from colmena.domain.catalog import stripe_amount
from colmena.gateways.checkout_session import (
    CheckoutRefused,
    CheckoutUnavailable,
    ProviderSession,
    SessionRequest,
)
from colmena.gateways.retry import retryable_http

PROVIDER = "stripe"


def session_params(request: SessionRequest) -> dict[str, Any]:
    """The Checkout Session create parameters for one order."""
    metadata = {"order_id": request.order_id}
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": request.currency.lower(),
                    "unit_amount": stripe_amount(request.amount, request.currency),
                    "product_data": {"name": request.title},
                },
            }
        ],
        "client_reference_id": request.order_id,
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
        "customer_email": request.buyer_email,
        "success_url": request.success_url,
        "cancel_url": request.cancel_url,
    }
    if request.installments:
        params["payment_method_options"] = {"card": {"installments": {"enabled": True}}}
    return params


async def create_session(
    request: SessionRequest, *, secret_key: str, api_url: str, timeout_s: float
) -> ProviderSession:
    """Create the session; CheckoutUnavailable or CheckoutRefused when Stripe fails."""
    http_client = stripe.AIOHTTPClient(timeout=timeout_s)
    client = stripe.StripeClient(
        secret_key,
        base_addresses={"api": api_url},
        http_client=http_client,
        max_network_retries=0,
    )
    try:
        session = await client.v1.checkout.sessions.create_async(
            session_params(request),  # type: ignore[arg-type]
            {"idempotency_key": request.idempotency_key},
        )
    except stripe.APIConnectionError as exc:
        raise CheckoutUnavailable(PROVIDER, f"Stripe unreachable: {type(exc).__name__}") from None
    except stripe.StripeError as exc:
        status = exc.http_status or 0
        if retryable_http(status):
            raise CheckoutUnavailable(PROVIDER, f"Stripe answered HTTP {status}") from None
        raise CheckoutRefused(
            PROVIDER, f"Stripe refused the session: HTTP {status} {exc.user_message or ''}".strip()
        ) from None
    finally:
        await http_client.close_async()
    if not session.url:
        raise CheckoutRefused(PROVIDER, f"Stripe session {session.id} has no URL")
    return ProviderSession(provider_ref=session.id, redirect_url=session.url)
