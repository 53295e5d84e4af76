"""What a provider's event means for colmena: a payment status, a plan change, or nothing.

Pure translation from each provider's wire shape (Stripe events, Mercado Pago payment objects)
to one vocabulary, so the state machine and the follow-ups never look at provider JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from colmena.domain.payment_state import Status

PRODUCT_KINDS = ("license", "plan")
PLANS = ("free", "pro", "enterprise")
ZERO_DECIMAL_CURRENCIES = frozenset({"CLP", "PYG", "JPY", "KRW", "VND", "UGX", "XAF", "XOF"})


@dataclass(frozen=True)
class PaymentUpdate:
    provider: str
    provider_payment_id: str
    status: Status
    provider_at: datetime
    source: str
    amount_minor: int
    currency: str
    customer_email: str | None = None
    customer_locale: str | None = None
    tenant_ref: str | None = None
    product_ref: str | None = None
    product_kind: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def details(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "provider_payment_id": self.provider_payment_id,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "customer_email": self.customer_email,
            "customer_locale": self.customer_locale,
            "tenant_ref": self.tenant_ref,
            "product_ref": self.product_ref,
            "product_kind": self.product_kind,
            "metadata": self.metadata,
            "provider_at": self.provider_at,
        }


@dataclass(frozen=True)
class PlanUpdate:
    tenant_ref: str
    plan: str
    active: bool
    source: str
    provider_at: datetime


@dataclass(frozen=True)
class Ignored:
    reason: str


Interpretation = PaymentUpdate | PlanUpdate | Ignored


def _metadata(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        return {}
    return {
        str(key): str(value)
        for key, value in raw.items()
        if value is not None and len(str(value)) <= 500
    }


def _common(metadata: dict[str, str]) -> dict[str, Any]:
    kind = metadata.get("product_kind")
    return {
        "customer_locale": metadata.get("locale"),
        "tenant_ref": metadata.get("tenant_id"),
        "product_ref": metadata.get("product"),
        "product_kind": kind if kind in PRODUCT_KINDS else None,
        "metadata": metadata,
    }


def _ts(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


# Stripe ------------------------------------------------------------------------------------

_PI_STATUS = {
    "payment_intent.succeeded": Status.APPROVED,
    "payment_intent.payment_failed": Status.REJECTED,
}
_SESSION_STATUS = {
    "checkout.session.async_payment_succeeded": Status.APPROVED,
    "checkout.session.async_payment_failed": Status.REJECTED,
}


def _stripe_payment(
    obj: dict[str, Any], payment_id: str, status: Status, event: dict[str, Any], **extra: Any
) -> PaymentUpdate:
    metadata = _metadata(obj.get("metadata"))
    fields = _common(metadata)
    email = extra.pop("email", None) or metadata.get("email")
    return PaymentUpdate(
        provider="stripe",
        provider_payment_id=payment_id,
        status=status,
        provider_at=_ts(event["created"]),
        source=event["type"],
        amount_minor=int(extra.pop("amount")),
        currency=str(obj.get("currency", "")).upper(),
        customer_email=email,
        **fields,
    )


def interpret_stripe(event: dict[str, Any]) -> Interpretation:
    """Map a verified Stripe event; events colmena does not act on are `Ignored`."""
    kind = event["type"]
    obj = event["data"]["object"]
    if kind in _PI_STATUS:
        return _stripe_payment(
            obj,
            obj["id"],
            _PI_STATUS[kind],
            event,
            amount=obj.get("amount_received") or obj.get("amount", 0),
            email=obj.get("receipt_email"),
        )
    if kind == "checkout.session.completed" or kind in _SESSION_STATUS:
        return _stripe_session(obj, event)
    if kind == "charge.refunded":
        if not obj.get("refunded"):
            return Ignored("partial refund: the payment stays approved")
        payment_id = obj.get("payment_intent") or obj["id"]
        return _stripe_payment(
            obj,
            payment_id,
            Status.REFUNDED,
            event,
            amount=obj.get("amount", 0),
            email=(obj.get("billing_details") or {}).get("email"),
        )
    if kind in ("invoice.paid", "invoice.payment_failed"):
        return _stripe_invoice(obj, event)
    if kind in ("customer.subscription.updated", "customer.subscription.deleted"):
        return _stripe_subscription(obj, event)
    return Ignored(f"event type {kind} is not handled")


def _stripe_session(obj: dict[str, Any], event: dict[str, Any]) -> Interpretation:
    if obj.get("mode") == "subscription":
        return Ignored("subscription checkout: the plan follows invoice.paid")
    if event["type"] == "checkout.session.completed":
        paid = obj.get("payment_status") in ("paid", "no_payment_required")
        status = Status.APPROVED if paid else Status.PENDING
    else:
        status = _SESSION_STATUS[event["type"]]
    payment_id = obj.get("payment_intent") or obj["id"]
    email = (obj.get("customer_details") or {}).get("email") or obj.get("customer_email")
    return _stripe_payment(
        obj, payment_id, status, event, amount=obj.get("amount_total") or 0, email=email
    )


def _subscription_metadata(invoice: dict[str, Any]) -> dict[str, str]:
    """Invoice metadata merged with its subscription's (old and new API shapes)."""
    details = (
        invoice.get("subscription_details")
        or (invoice.get("parent") or {}).get("subscription_details")
        or {}
    )
    return {**_metadata(details.get("metadata")), **_metadata(invoice.get("metadata"))}


def _subscription_id(invoice: dict[str, Any]) -> str | None:
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    found = details.get("subscription") or invoice.get("subscription")
    return str(found) if found else None


def _stripe_invoice(obj: dict[str, Any], event: dict[str, Any]) -> Interpretation:
    metadata = _subscription_metadata(obj)
    metadata.setdefault("product_kind", "plan")
    subscription = _subscription_id(obj)
    if subscription:
        metadata["subscription"] = subscription
    fields = _common(metadata)
    status = Status.APPROVED if event["type"] == "invoice.paid" else Status.REJECTED
    return PaymentUpdate(
        provider="stripe",
        provider_payment_id=obj["id"],
        status=status,
        provider_at=_ts(event["created"]),
        source=event["type"],
        amount_minor=int(obj.get("amount_paid") or obj.get("amount_due") or 0),
        currency=str(obj.get("currency", "")).upper(),
        customer_email=obj.get("customer_email") or metadata.get("email"),
        **fields,
    )


def _stripe_subscription(obj: dict[str, Any], event: dict[str, Any]) -> Interpretation:
    metadata = _metadata(obj.get("metadata"))
    tenant, plan = metadata.get("tenant_id"), metadata.get("plan")
    if not tenant or plan not in PLANS:
        return Ignored("subscription without tenant_id/plan metadata")
    active = event["type"] == "customer.subscription.updated" and obj.get("status") in (
        "active",
        "trialing",
    )
    return PlanUpdate(
        tenant_ref=tenant,
        plan=plan,
        active=active,
        source=f"subscription:{obj['id']}",
        provider_at=_ts(event["created"]),
    )


# Mercado Pago -----------------------------------------------------------------------------

_MP_STATUS = {status.value: status for status in Status if status is not Status.NEW}


def to_minor_units(amount: Any, currency: str) -> int:
    """Mercado Pago sends decimal amounts; colmena stores integer minor units, exactly."""
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        raise ValueError(f"amount {amount!r} is not a number") from None
    exponent = 0 if currency in ZERO_DECIMAL_CURRENCIES else 2
    scaled = value.scaleb(exponent)
    if not scaled.is_finite() or scaled < 0:
        raise ValueError(f"amount {amount!r} is not a positive amount")
    return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _parse_time(value: Any) -> datetime:
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def interpret_mercadopago(payment: dict[str, Any]) -> Interpretation:
    """Map a payment object fetched from the API (the authoritative status)."""
    status = _MP_STATUS.get(str(payment.get("status")))
    if status is None:
        return Ignored(f"unknown Mercado Pago status {payment.get('status')!r}")
    metadata = _metadata(payment.get("metadata"))
    if payment.get("external_reference"):
        metadata.setdefault("external_reference", str(payment["external_reference"]))
    currency = str(payment.get("currency_id", "")).upper()
    stamp = payment.get("date_last_updated") or payment.get("date_created")
    return PaymentUpdate(
        provider="mercadopago",
        provider_payment_id=str(payment["id"]),
        status=status,
        provider_at=_parse_time(stamp),
        source=f"payment.{status.value}",
        amount_minor=to_minor_units(payment.get("transaction_amount", 0), currency),
        currency=currency,
        customer_email=(payment.get("payer") or {}).get("email") or metadata.get("email"),
        **_common(metadata),
    )
