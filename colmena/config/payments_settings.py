"""Payment provider settings: webhook secrets, Mercado Pago API access."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

MERCADOPAGO_PUBLIC_API = "https://api.mercadopago.com"
# Used by `colmena dev` and `colmena trigger` when no secret is configured: never in production,
# where an unset secret makes the webhook route answer 503 not_configured.
DEV_STRIPE_SECRET = "whsec_colmena_dev_only"
DEV_MERCADOPAGO_SECRET = "colmena-dev-only"


class PaymentsSettings(BaseModel):
    stripe_webhook_secrets: SecretStr | None = Field(
        default=None,
        description="comma-separated endpoint secrets (whsec_...); several during a roll",
    )
    stripe_tolerance_s: int = Field(default=300, ge=1, le=3600)
    mercadopago_webhook_secret: SecretStr | None = Field(
        default=None, description="comma-separated webhook secrets; the new one first during a roll"
    )
    mercadopago_access_token: SecretStr | None = None
    mercadopago_api_url: str = MERCADOPAGO_PUBLIC_API
    mercadopago_timeout_s: float = Field(default=10.0, gt=0, le=60)
    mercadopago_tolerance_s: int = Field(default=300, ge=1, le=3600)

    def stripe_secrets(self) -> list[str]:
        """The configured Stripe endpoint secrets, in the order given."""
        return _split(self.stripe_webhook_secrets)

    def mercadopago_secrets(self) -> list[str]:
        """The configured Mercado Pago webhook secrets, in the order given."""
        return _split(self.mercadopago_webhook_secret)


def _split(value: SecretStr | None) -> list[str]:
    if value is None:
        return []
    return [part.strip() for part in value.get_secret_value().split(",") if part.strip()]
