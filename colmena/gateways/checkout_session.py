"""What every checkout provider is asked for and answers, and how each may fail.

A provider gateway (stripe_checkout, mercadopago_checkout, bitso) takes a `SessionRequest`,
made from a stored order only, and answers a `ProviderSession`: the provider's reference and the
URL the buyer is sent to. Its failures are of two kinds, so the ingress can tell the buyer the
truth: `CheckoutUnavailable` (connection refused, timeout, 429 or 5xx: the order waits as
`pending_provider` and a retry with the same Idempotency-Key completes it) and
`CheckoutRefused` (the provider said no to this request: retrying the same will not help).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from colmena.errors import ColmenaError


class CheckoutProviderError(ColmenaError):
    """Root of every checkout provider failure; `provider` names who failed."""

    retryable = False

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(message)
        self.provider = provider


class CheckoutUnavailable(CheckoutProviderError):
    """The provider did not answer, or answered 429/5xx: worth retrying later."""

    retryable = True


class CheckoutRefused(CheckoutProviderError):
    """The provider refused the request (4xx): an operator must look at it."""


@dataclass(frozen=True)
class SessionRequest:
    """One order as a provider must see it. The metadata sent is the order id only."""

    order_id: str
    title: str
    amount: Decimal
    currency: str
    buyer_email: str
    installments: int | None
    success_url: str
    cancel_url: str
    pending_url: str
    notification_url: str
    idempotency_key: str


@dataclass(frozen=True)
class ProviderSession:
    provider_ref: str
    redirect_url: str
