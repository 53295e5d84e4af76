"""Stripe's API for checkout tests: colmena's Stripe Checkout sandbox (payment mode) on a port of
its own, with Stripe's error body for injected failures. Paying a session posts the signed
events to the `target` given."""

from __future__ import annotations

from typing import Any

from colmena.sandbox.stripe_billing import LEDGER, WebhookTarget
from colmena.sandbox.stripe_checkout import stripe_checkout_app
from tests.standins.provider_api import ProviderApi

SECRET_KEY = "sk_test_checkout_standin"


def stripe_error(status: int) -> dict[str, Any]:
    return {"error": {"type": "api_error", "message": f"stand-in failure {status}"}}


class StripeApi(ProviderApi):
    def __init__(self, target: WebhookTarget | None = None) -> None:
        self.target = target or WebhookTarget(url="http://127.0.0.1:9/unset", secret="whsec_x")
        super().__init__(stripe_checkout_app(target=self.target), stripe_error)

    def sessions(self) -> dict[str, dict[str, Any]]:
        return self.sandbox[LEDGER].sessions
