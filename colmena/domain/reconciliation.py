"""What must agree about one payment, and every way it can disagree.

A payment's story is told four times: by the provider, by the payments row, by its license and
by its invoice (and the order it settled). The follow-up rules (`colmena.actors.payments`) say
how the four must line up once the work is done:

- approved, a license product: a license exists;
- approved with fiscal data (an RFC): the payment's own invoice (the CFDI de Ingreso) exists;
- refunded or charged back after approval: the license is revoked, and a stamped invoice is
  cancelled at the SAT (or its cancellation is under way), or credit notes cover the whole
  amount; a sale on the CFDI global is covered by credit notes;
- linked to an order: the payment's amount and currency are the order's;
- an invoice's total is the payment's amount.

Follow-ups run after the status is committed, so a payment whose status changed within the
grace period is not judged yet: a cron run never alarms on work still in its queue. With the
provider's own records, the status and amount colmena holds must be what the provider says, and
neither side may have a payment the other lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from colmena.domain.money import format_minor, format_money, to_minor
from colmena.domain.payment_state import REVERSED, Status

# Cancellation states that count as "cancelled": done, or on its way (the SAT or the receiver
# still deciding); a rejected, refused or expired one is not.
CANCELLATION_UNDER_WAY = frozenset({"requested", "in_process", "awaiting_acceptance", "cancelled"})
STAMPED_INVOICE = frozenset({"stamped", "cancellation_requested"})


class Kind(StrEnum):
    APPROVED_NO_LICENSE = "approved_no_license"
    APPROVED_NO_INVOICE = "approved_no_invoice"
    REVERSED_LICENSE_LIVE = "reversed_license_live"
    REVERSED_INVOICE_LIVE = "reversed_invoice_live"
    ORDER_AMOUNT = "order_amount_differs"
    INVOICE_AMOUNT = "invoice_amount_differs"
    PROVIDER_STATUS = "provider_status_differs"
    PROVIDER_AMOUNT = "provider_amount_differs"
    MISSING_AT_PROVIDER = "missing_at_provider"
    MISSING_AT_COLMENA = "missing_at_colmena"


@dataclass(frozen=True)
class Disagreement:
    """One thing that does not add up; `payment_id` is None for a provider payment colmena
    does not know."""

    payment_id: int | None
    kind: str
    detail: str
    provider: str | None = None
    provider_payment_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "payment_id": self.payment_id,
            "kind": self.kind,
            "detail": self.detail,
            "provider": self.provider,
            "provider_payment_id": self.provider_payment_id,
        }


@dataclass(frozen=True)
class PaymentFacts:
    """A payment joined with its license, its invoice and credit notes, and its order."""

    payment_id: int
    provider: str
    provider_payment_id: str
    status: str
    status_at: datetime
    approved_at: datetime | None
    amount_minor: int
    currency: str
    product_kind: str | None
    wants_invoice: bool
    license_id: str | None = None
    license_revoked: bool = False
    invoice_id: int | None = None
    invoice_status: str | None = None
    invoice_total: Decimal | None = None
    invoice_currency: str | None = None
    cancellation_state: str | None = None
    credited_minor: int = 0
    on_global_invoice: bool = False
    order_id: str | None = None
    order_amount: Decimal | None = None
    order_currency: str | None = None


def judge(facts: PaymentFacts, *, now: datetime, grace: timedelta) -> list[Disagreement]:
    """Every disagreement among the payment, its license, invoice and order."""
    found: list[Disagreement] = []

    def disagree(kind: Kind, detail: str) -> None:
        found.append(
            Disagreement(
                facts.payment_id, kind.value, detail, facts.provider, facts.provider_payment_id
            )
        )

    settled = facts.status_at <= now - grace
    paid = format_minor(facts.amount_minor, facts.currency)
    if settled and facts.status == Status.APPROVED:
        if facts.product_kind == "license" and facts.license_id is None:
            disagree(Kind.APPROVED_NO_LICENSE, f"approved ({paid}) but no license was issued")
        if facts.wants_invoice and facts.invoice_id is None:
            disagree(Kind.APPROVED_NO_INVOICE, f"approved with fiscal data ({paid}) but no invoice")
    if settled and facts.status in REVERSED and facts.approved_at is not None:
        if facts.license_id is not None and not facts.license_revoked:
            disagree(
                Kind.REVERSED_LICENSE_LIVE,
                f"{facts.status} but license {facts.license_id} is not revoked",
            )
        credited = facts.credited_minor >= facts.amount_minor
        if (
            facts.invoice_status in STAMPED_INVOICE
            and facts.cancellation_state not in CANCELLATION_UNDER_WAY
            and not credited
        ):
            state = facts.cancellation_state or "never requested"
            disagree(
                Kind.REVERSED_INVOICE_LIVE,
                f"{facts.status} but invoice {facts.invoice_id} is not cancelled "
                f"(cancellation: {state}; credit notes cover "
                f"{format_minor(facts.credited_minor, facts.currency)} of {paid})",
            )
        if facts.status == Status.REFUNDED and facts.on_global_invoice and not credited:
            disagree(
                Kind.REVERSED_INVOICE_LIVE,
                f"refunded but its sale on the CFDI global is credited only "
                f"{format_minor(facts.credited_minor, facts.currency)} of {paid}",
            )
    if facts.order_id is not None and facts.order_amount is not None and facts.order_currency:
        if not _same_amount(facts, facts.order_amount, facts.order_currency):
            ordered = format_money(facts.order_amount, facts.order_currency)
            disagree(Kind.ORDER_AMOUNT, f"paid {paid}, order {facts.order_id} is {ordered}")
    if facts.invoice_total is not None and facts.invoice_currency:
        if not _same_amount(facts, facts.invoice_total, facts.invoice_currency):
            billed = format_money(facts.invoice_total, facts.invoice_currency)
            disagree(Kind.INVOICE_AMOUNT, f"paid {paid}, invoice {facts.invoice_id} bills {billed}")
    return found


def _same_amount(facts: PaymentFacts, amount: Decimal, currency: str) -> bool:
    if currency.upper() != facts.currency.upper():
        return False
    try:
        return to_minor(amount, currency) == facts.amount_minor
    except ValueError:  # finer than the currency's minor unit: not the payment's amount
        return False


@dataclass(frozen=True)
class ProviderRecord:
    """A payment as the provider's own API reports it. `accepted` are the colmena statuses
    that agree with it (a disputed Stripe charge may be in mediation, lost or won)."""

    provider: str
    provider_payment_id: str
    status: str
    accepted: frozenset[str]
    amount_minor: int
    currency: str
    created_at: datetime


@dataclass(frozen=True)
class Held:
    """What colmena holds of a payment, for comparing with the provider."""

    payment_id: int
    status: str
    amount_minor: int
    currency: str


def compare_with_provider(record: ProviderRecord, held: Held | None) -> list[Disagreement]:
    """The provider's record against colmena's row (None: colmena has no such payment)."""
    said = format_minor(record.amount_minor, record.currency)
    if held is None:
        return [
            Disagreement(
                None,
                Kind.MISSING_AT_COLMENA.value,
                f"{record.provider} has a {record.status} payment of {said} colmena never recorded",
                record.provider,
                record.provider_payment_id,
            )
        ]
    found = []
    if held.status not in record.accepted:
        found.append(
            Disagreement(
                held.payment_id,
                Kind.PROVIDER_STATUS.value,
                f"colmena says {held.status}, {record.provider} says {record.status}",
                record.provider,
                record.provider_payment_id,
            )
        )
    if held.currency.upper() != record.currency.upper() or held.amount_minor != record.amount_minor:
        found.append(
            Disagreement(
                held.payment_id,
                Kind.PROVIDER_AMOUNT.value,
                f"colmena holds {format_minor(held.amount_minor, held.currency)}, "
                f"{record.provider} says {said}",
                record.provider,
                record.provider_payment_id,
            )
        )
    return found


def missing_at_provider(provider: str, provider_payment_id: str, held: Held) -> Disagreement:
    return Disagreement(
        held.payment_id,
        Kind.MISSING_AT_PROVIDER.value,
        f"colmena holds a {held.status} payment of "
        f"{format_minor(held.amount_minor, held.currency)} {provider} does not list",
        provider,
        provider_payment_id,
    )
