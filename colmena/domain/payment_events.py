"""What a provider's event means for colmena: a payment status, a plan change, or nothing.

Pure translation from each provider's wire shape (Stripe events, Mercado Pago payment objects)
to one vocabulary, so the state machine and the follow-ups never look at provider JSON.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from colmena.domain.money import exponent
from colmena.domain.payment_state import Status
from colmena.domain.plans import SUBSCRIPTION_EVENTS, subscription_effect

PRODUCT_KINDS = ("license", "plan")
PLANS = ("free", "pro", "enterprise")


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
    # The payment's cumulative refund as the provider reports it (0: none); a refund is
    # credited by CFDI de Egreso (`colmena.actors.credit_notes`).
    refunded_minor: int = 0

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
class RefundUpdate:
    """A partial refund: the payment stays as it is (approved, or disputed), but its invoice is
    credited for the cumulative `refunded_minor`."""

    provider: str
    provider_payment_id: str
    refunded_minor: int
    provider_at: datetime


@dataclass(frozen=True)
class Ignored:
    reason: str


Interpretation = PaymentUpdate | PlanUpdate | RefundUpdate | Ignored


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


_DISPUTE_EVENTS = ("charge.dispute.created", "charge.dispute.closed")
_INVOICE_EVENTS = ("invoice.paid", "invoice.payment_failed")


def stripe_handles(kind: str) -> bool:
    """Whether `interpret_stripe` acts on events of this type (a thin event of any other type is
    not worth fetching its object for)."""
    return kind in (
        *_PI_STATUS,
        *_SESSION_STATUS,
        "checkout.session.completed",
        "charge.refunded",
        *_DISPUTE_EVENTS,
        *_INVOICE_EVENTS,
        *SUBSCRIPTION_EVENTS,
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
        # Sent for every refund, partial or whole; amount_refunded is the charge's cumulative.
        payment_id = obj.get("payment_intent") or obj["id"]
        refunded = int(obj.get("amount_refunded") or 0)
        if not obj.get("refunded"):
            if refunded <= 0:
                return Ignored("charge.refunded with nothing refunded")
            return RefundUpdate("stripe", payment_id, refunded, _ts(event["created"]))
        update = _stripe_payment(
            obj,
            payment_id,
            Status.REFUNDED,
            event,
            amount=obj.get("amount", 0),
            email=(obj.get("billing_details") or {}).get("email"),
        )
        return replace(update, refunded_minor=refunded or update.amount_minor)
    if kind in _DISPUTE_EVENTS:
        return _stripe_dispute(obj, event)
    if kind in _INVOICE_EVENTS:
        return _stripe_invoice(obj, event)
    if kind in SUBSCRIPTION_EVENTS:
        return _stripe_subscription(obj, event)
    return Ignored(f"event type {kind} is not handled")


# How a closed dispute ends: won (and an inquiry closed without a chargeback) gives the money
# back to the seller; lost is a chargeback.
_DISPUTE_CLOSED = {
    "won": Status.APPROVED,
    "warning_closed": Status.APPROVED,
    "lost": Status.CHARGED_BACK,
}


def _stripe_dispute(obj: dict[str, Any], event: dict[str, Any]) -> Interpretation:
    """A dispute puts its payment in mediation; closing it approves it again or charges it
    back. The payment is the dispute's PaymentIntent (or its charge, as for refunds)."""
    if event["type"] == "charge.dispute.created":
        status = Status.IN_MEDIATION
    else:
        closed = _DISPUTE_CLOSED.get(str(obj.get("status")))
        if closed is None:
            return Ignored(f"dispute closed with status {obj.get('status')!r}")
        status = closed
    payment_id = obj.get("payment_intent") or obj.get("charge")
    if not isinstance(payment_id, str) or not payment_id:
        return Ignored("dispute names no payment")
    return _stripe_payment(obj, payment_id, status, event, amount=obj.get("amount") or 0)


def snapshot_of_thin_event(notification: dict[str, Any], related: dict[str, Any]) -> dict[str, Any]:
    """The v1 event a thin `v1.*` notification stands for, with its related object as fetched
    from the API (its state now, which the state machine weighs by the notification's time)."""
    created = datetime.fromisoformat(str(notification["created"]).replace("Z", "+00:00"))
    return {
        "id": notification["id"],
        "type": str(notification["type"]).removeprefix("v1."),
        "created": int(created.timestamp()),
        "data": {"object": related},
    }


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
    effect = subscription_effect(event["type"], obj, _ts(event["created"]))
    if effect.active is None:
        return Ignored(effect.reason)
    return PlanUpdate(
        tenant_ref=tenant,
        plan=plan,
        active=effect.active,
        source=f"subscription:{obj['id']}",
        provider_at=_ts(event["created"]),
    )


# Mercado Pago -----------------------------------------------------------------------------

_MP_STATUS = {status.value: status for status in Status if status is not Status.NEW}


def to_minor_units(amount: Any, currency: str) -> int:
    """Mercado Pago and Bitso send decimal amounts (JSON numbers, so a float's noise is rounded
    away); colmena stores integer minor units, with the currency's ISO 4217 exponent."""
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        raise ValueError(f"amount {amount!r} is not a number") from None
    scaled = value.scaleb(exponent(currency))
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
    amount_minor = to_minor_units(payment.get("transaction_amount", 0), currency)
    # Cumulative over the payment's refunds: partial ones keep status approved
    # (status_detail partially_refunded); a whole one is status refunded.
    refunded = to_minor_units(payment.get("transaction_amount_refunded") or 0, currency)
    if status is Status.REFUNDED and refunded == 0:
        refunded = amount_minor
    return PaymentUpdate(
        provider="mercadopago",
        provider_payment_id=str(payment["id"]),
        status=status,
        provider_at=_parse_time(stamp),
        source=f"payment.{status.value}",
        amount_minor=amount_minor,
        currency=currency,
        customer_email=(payment.get("payer") or {}).get("email") or metadata.get("email"),
        refunded_minor=refunded,
        **_common(metadata),
    )


MAX_ORDER_PAYMENTS = 20


def merchant_order_payments(order: dict[str, Any]) -> list[str]:
    """The ids of the payments a Mercado Pago merchant order lists, each to be fetched on its own
    (the order's copy of a payment is a summary, not the authoritative payment)."""
    listed = order.get("payments")
    if not isinstance(listed, list):
        return []
    ids = [str(item["id"]) for item in listed if isinstance(item, dict) and item.get("id")]
    if len(ids) > MAX_ORDER_PAYMENTS:
        raise ValueError(
            f"merchant order lists {len(ids)} payments, more than {MAX_ORDER_PAYMENTS}"
        )
    return list(dict.fromkeys(ids))


# Bitso ------------------------------------------------------------------------------------

# Pay with Bitso payment-intent statuses. EXPIRED is final at Bitso (the intent can no longer be
# paid), so it is the machine's terminal `cancelled`: a COMPLETED delivered after it never
# resurrects the payment. FAILED is `rejected`, which a later genuine completion may still follow.
_BITSO_INTENT_STATUS = {
    "CREATED": Status.PENDING,
    "PENDING": Status.PENDING,
    "PROCESSING": Status.IN_PROCESS,
    "COMPLETED": Status.APPROVED,
    "FAILED": Status.REJECTED,
    "EXPIRED": Status.CANCELLED,
}
_BITSO_FUNDING_STATUS = {
    "pending": Status.PENDING,
    "complete": Status.APPROVED,
    "failed": Status.REJECTED,
}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def bitso_funding_reference(payload: dict[str, Any]) -> uuid.UUID | None:
    """The order id a SPEI deposit names, if any: the payer writes it in the transfer's
    `concepto` (40 characters, room for a UUID; the 7-digit `numeric_reference` has none)."""
    details = payload.get("details")
    concept = details.get("concepto") if isinstance(details, dict) else None
    found = _UUID.search(concept) if isinstance(concept, str) else None
    return uuid.UUID(found.group()) if found else None


def _bitso_payment(
    payload: dict[str, Any], payment_id: Any, status: Status, source: str, metadata: dict[str, str]
) -> PaymentUpdate:
    currency = str(payload.get("asset") or payload.get("currency") or "").upper()
    stamp = payload.get("updated_at") or payload.get("created_at")
    return PaymentUpdate(
        provider="bitso",
        provider_payment_id=str(payment_id),
        status=status,
        provider_at=_parse_time(stamp),
        source=source,
        amount_minor=to_minor_units(payload.get("amount", 0), currency),
        currency=currency,
        **_common(metadata),
    )


def interpret_bitso(
    event: dict[str, Any], *, funding_order: uuid.UUID | None = None
) -> Interpretation:
    """Map a verified Bitso delivery. A payment intent names its order by `external_ref` (the
    order id colmena created it with). A SPEI `funding` settles an order only when its reference
    matched one (`funding_order`, looked up by the caller); otherwise it is recorded and ignored,
    never guessed."""
    kind, payload = event.get("event"), event["payload"]
    if kind == "payment_intent":
        status = _BITSO_INTENT_STATUS.get(str(payload.get("status")))
        if status is None:
            return Ignored(f"unknown payment intent status {payload.get('status')!r}")
        metadata = _metadata({"external_ref": payload.get("external_ref")})
        return _bitso_payment(
            payload, payload["id"], status, f"payment_intent.{payload['status']}", metadata
        )
    if kind == "funding":
        status = _BITSO_FUNDING_STATUS.get(str(payload.get("status")))
        if status is None:
            return Ignored(f"unknown funding status {payload.get('status')!r}")
        reference = bitso_funding_reference(payload)
        if reference is None:
            return Ignored("funding names no order reference")
        if funding_order != reference:
            return Ignored(f"funding reference {reference} matches no Bitso order")
        return _bitso_payment(
            payload,
            payload["fid"],
            status,
            f"funding.{payload['status']}",
            {"order_id": str(reference)},
        )
    return Ignored(f"event type {kind} is not handled")
