"""Bitso's Pay with Bitso API for checkout tests: colmena's Bitso sandbox on a port of its own,
with Bitso's error envelope for injected failures. Paying an intent delivers the COMPLETED
event, signed with this stand-in's own RSA key, to `account.webhook_url`."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from colmena.gateways import bitso_webhooks
from colmena.sandbox.bitso import Account, bitso_app
from tests.standins.provider_api import ProviderApi

API_KEY = "standin-key"
API_SECRET = "standin-secret"


def bitso_error(status: int) -> dict[str, Any]:
    return {"success": False, "error": {"code": "0500", "message": f"stand-in failure {status}"}}


class BitsoApi(ProviderApi):
    def __init__(self) -> None:
        self.account = Account(
            api_key=API_KEY,
            api_secret=API_SECRET,
            signing_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        )
        super().__init__(bitso_app(self.account), bitso_error)

    def public_keys(self) -> dict[str, str]:
        """What COLMENA_BITSO_WEBHOOK_PUBLIC_KEYS must list to accept this stand-in's events."""
        assert self.account.signing_key is not None
        return {bitso_webhooks.DEV_KEY_ID: bitso_webhooks.public_key_text(self.account.signing_key)}
