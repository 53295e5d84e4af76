"""Settings for what the receiving side fetches: Stripe's API for thin events, and the budget
that keeps unsigned Mercado Pago IPN hints from driving colmena's API calls."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ReceivingSettings(BaseModel):
    inbox_batch_wait_ms: float = Field(
        default=10.0,
        ge=0,
        le=100,
        description="how long webhooks gather in the ingress before their batch is committed",
    )
    # Thin events are fetched with the checkout's Stripe key and API URL (COLMENA_STRIPE_SECRET_KEY,
    # COLMENA_STRIPE_API_URL): a restricted key that may read events and objects is enough.
    stripe_timeout_s: float = Field(default=10.0, gt=0, le=60)
    mercadopago_ipn_enabled: bool = Field(
        default=True,
        description="accept unsigned IPN hints (?topic=payment&id=...), each fetched from the API",
    )
    mercadopago_ipn_window_s: int = Field(
        default=300, ge=1, le=86_400, description="one API fetch per notified id per window"
    )
    mercadopago_ipn_budget_per_minute: int = Field(
        default=120, ge=1, le=100_000, description="IPN hints stored per minute, all ids together"
    )
