"""Mercado Pago's API for checkout tests: colmena's Mercado Pago sandbox (payments and Checkout
Pro preferences) on a port of its own, with Mercado Pago's error body for injected failures.
Paying a preference notifies its notification_url, signed with `webhook_secret`."""

from __future__ import annotations

from typing import Any

from colmena.sandbox.mercadopago import mercadopago_app
from colmena.sandbox.mercadopago_preferences import PREFERENCES, WEBHOOK_SECRET
from tests.standins.provider_api import ProviderApi

ACCESS_TOKEN = "TEST-checkout-standin"


def mercadopago_error(status: int) -> dict[str, Any]:
    return {"message": f"stand-in failure {status}", "error": "internal_error", "status": status}


class MercadoPagoApi(ProviderApi):
    def __init__(self, webhook_secret: str = "mp-standin-secret") -> None:
        app = mercadopago_app()
        app[WEBHOOK_SECRET] = webhook_secret
        super().__init__(app, mercadopago_error)

    def preferences(self) -> dict[str, dict[str, Any]]:
        return self.sandbox[PREFERENCES]
