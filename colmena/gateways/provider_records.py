"""The providers' own records of payments, for the reconciliation report's `--provider-check`.

- Stripe: balance transactions (`GET /v1/balance_transactions`, what actually moved money),
  created in the range, with `expand[]=data.source` so each carries its charge. Charges and
  payments are kept; the charge names the PaymentIntent colmena stores (or, for a subscription
  invoice, the invoice), its amount, and whether it was refunded or disputed.
- Mercado Pago: the payments search (`GET /v1/payments/search`, range `date_created`), each
  result read by the same interpretation the webhooks use (`interpret_mercadopago`).

Both are read page by page through the official libraries (blocking: call from a thread), so
the caller compares one page with colmena's rows before asking for the next. Library retries
are off; a failure is one `ProviderRecordsError` naming the provider and what it answered.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import stripe

from colmena.domain.payment_events import PaymentUpdate, interpret_mercadopago
from colmena.domain.payment_state import Status
from colmena.domain.reconciliation import ProviderRecord
from colmena.errors import ColmenaError
from colmena.gateways.mercadopago import MercadoPagoClient, MercadoPagoError

STRIPE_PAGE = 100
MERCADOPAGO_PAGE = 100
# Balance transaction types that are a customer's payment (`payment` is how some payment
# methods' charges appear).
STRIPE_PAYMENT_TYPES = frozenset({"charge", "payment"})
Page = list[ProviderRecord]


class ProviderRecordsError(ColmenaError):
    """The provider's records could not be read (unreachable, refused, not configured)."""


def _stripe_status(charge: dict[str, Any]) -> tuple[str, frozenset[str]]:
    """What the charge says happened, and the colmena statuses that agree with it."""
    if charge.get("disputed"):
        return "disputed", frozenset({"in_mediation", "charged_back", "approved", "refunded"})
    if charge.get("refunded"):
        return "refunded", frozenset({"refunded"})
    if charge.get("status") == "failed":
        return "failed", frozenset({"rejected", "cancelled"})
    if charge.get("status") == "pending":
        return "pending", frozenset({"pending", "in_process", "new"})
    if int(charge.get("amount_refunded") or 0) > 0:
        return "partially_refunded", frozenset({"approved"})
    return "succeeded", frozenset({"approved"})


def stripe_record(transaction: dict[str, Any]) -> ProviderRecord | None:
    """A balance transaction with its expanded charge as a record; None for other kinds."""
    charge = transaction.get("source")
    if transaction.get("type") not in STRIPE_PAYMENT_TYPES or not isinstance(charge, dict):
        return None
    paid_for = charge.get("payment_intent") or charge.get("invoice") or charge["id"]
    if isinstance(paid_for, dict):
        paid_for = paid_for["id"]
    status, accepted = _stripe_status(charge)
    return ProviderRecord(
        provider="stripe",
        provider_payment_id=str(paid_for),
        status=status,
        accepted=accepted,
        amount_minor=int(charge.get("amount", transaction.get("amount", 0))),
        currency=str(charge.get("currency") or transaction.get("currency", "")).upper(),
        created_at=datetime.fromtimestamp(
            int(charge.get("created") or transaction["created"]), UTC
        ),
    )


def stripe_pages(
    *, api_key: str, api_base: str, timeout_s: float, start: datetime, end: datetime
) -> Iterator[Page]:
    """Stripe's payment records created in [start, end), a page at a time."""
    client = stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base.rstrip("/")},
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=timeout_s),
    )
    params: dict[str, Any] = {
        "created": {"gte": int(start.timestamp()), "lt": int(end.timestamp())},
        "limit": STRIPE_PAGE,
        "expand": ["data.source"],
    }
    while True:
        try:
            page = client.v1.balance_transactions.list(params)  # type: ignore[arg-type]
        except stripe.StripeError as exc:
            raise ProviderRecordsError(
                f"Stripe balance transactions: {type(exc).__name__} "
                f"(HTTP {exc.http_status or 'none'})"
            ) from None
        transactions = [item.to_dict() for item in page.data]
        yield [r for r in map(stripe_record, transactions) if r is not None]
        if not page.has_more or not transactions:
            return
        params["starting_after"] = transactions[-1]["id"]


def mercadopago_record(payment: dict[str, Any]) -> ProviderRecord | None:
    update = interpret_mercadopago(payment)
    if not isinstance(update, PaymentUpdate):
        return None
    created = datetime.fromisoformat(str(payment.get("date_created")))
    accepted = {update.status.value}
    if update.status is Status.AUTHORIZED:  # captured later: colmena may already hold approved
        accepted.add(Status.APPROVED.value)
    return ProviderRecord(
        provider="mercadopago",
        provider_payment_id=update.provider_payment_id,
        status=update.status.value,
        accepted=frozenset(accepted),
        amount_minor=update.amount_minor,
        currency=update.currency,
        created_at=created.astimezone(UTC),
    )


def mercadopago_pages(
    client: MercadoPagoClient, *, start: datetime, end: datetime
) -> Iterator[Page]:
    """Mercado Pago's payments created in [start, end], a page at a time (oldest first)."""
    offset = 0
    while True:
        filters = {
            "sort": "date_created",
            "criteria": "asc",
            "range": "date_created",
            "begin_date": start.isoformat(timespec="milliseconds"),
            "end_date": end.isoformat(timespec="milliseconds"),
            "offset": offset,
            "limit": MERCADOPAGO_PAGE,
        }
        try:
            page = client.search_payments(filters)
        except MercadoPagoError as exc:
            raise ProviderRecordsError(f"Mercado Pago payments search: {exc}") from None
        results = page.get("results") or []
        yield [r for r in map(mercadopago_record, results) if r is not None]
        offset += len(results)
        if not results or offset >= int((page.get("paging") or {}).get("total", 0)):
            return
