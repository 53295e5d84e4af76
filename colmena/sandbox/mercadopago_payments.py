"""A Mercado Pago sandbox payment as the API shows it, and the API's refusals.

Shapes from the API reference: integer ids, decimal amounts, dates in milliseconds with the
seller's offset, `live_mode` false, and errors as `{"message", "error", "status", "cause"}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from colmena.sandbox.mercadopago_cards import AUTHORIZED, Outcome

SELLER_TZ = timezone(timedelta(hours=-4))  # the offset Mercado Pago writes its dates with
CURRENCY = "MXN"  # the sandbox seller is a Mexican (MLM) account
COLLECTOR_ID = 1_234_567_890
OFFLINE_DAYS_TO_PAY = 3
RELEASE_DAYS = 14


class SandboxError(Exception):
    """A refusal in the API's shape: HTTP status, `error` label, cause code and description."""

    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.code = code
        self.description = description

    def body(self) -> dict[str, Any]:
        return {
            "message": self.description,
            "error": self.error,
            "status": self.status,
            "cause": [{"code": self.code, "description": self.description, "data": None}],
        }


def bad_request(code: int, description: str) -> SandboxError:
    return SandboxError(400, "bad_request", code, description)


def mp_time(moment: datetime | None) -> str | None:
    """A date as the API writes it: milliseconds and the seller's offset."""
    return moment.astimezone(SELLER_TZ).isoformat(timespec="milliseconds") if moment else None


def money(value: Decimal) -> float:
    return float(value)


@dataclass
class SandboxPayment:
    """One payment; `wire()` is its `GET /v1/payments/{id}` answer."""

    id: int
    amount: Decimal
    outcome: Outcome
    created: datetime
    updated: datetime
    method_id: str
    type_id: str
    email: str
    description: str | None
    external_reference: str | None
    metadata: dict[str, Any]
    installments: int
    binary_mode: bool
    card: dict[str, Any] | None
    approved: datetime | None = None
    refunded: Decimal = Decimal(0)
    refunds: list[dict[str, Any]] = field(default_factory=list)

    def released(self) -> datetime | None:
        return self.approved + timedelta(days=RELEASE_DAYS) if self.approved else None

    def wire(self) -> dict[str, Any]:
        offline = self.card is None
        return {
            "id": self.id,
            "date_created": mp_time(self.created),
            "date_approved": mp_time(self.approved),
            "date_last_updated": mp_time(self.updated),
            "date_of_expiration": (
                mp_time(self.created + timedelta(days=OFFLINE_DAYS_TO_PAY)) if offline else None
            ),
            "money_release_date": mp_time(self.released()),
            "operation_type": "regular_payment",
            "issuer_id": None if offline else "160",
            "payment_method_id": self.method_id,
            "payment_type_id": self.type_id,
            "status": self.outcome.status,
            "status_detail": self.outcome.status_detail,
            "currency_id": CURRENCY,
            "description": self.description,
            "live_mode": False,
            "collector_id": COLLECTOR_ID,
            "payer": {
                "id": None,
                "email": self.email,
                "type": None,
                "identification": {"type": None, "number": None},
                "first_name": None,
                "last_name": None,
            },
            "metadata": self.metadata,
            "additional_info": {},
            "external_reference": self.external_reference,
            "transaction_amount": money(self.amount),
            "transaction_amount_refunded": money(self.refunded),
            "coupon_amount": 0,
            "transaction_details": {
                "net_received_amount": money(self.amount),
                "total_paid_amount": money(self.amount),
                "overpaid_amount": 0,
                "installment_amount": money(self.amount / self.installments),
                "financial_institution": None,
            },
            "fee_details": [],
            "captured": self.outcome != AUTHORIZED,
            "binary_mode": self.binary_mode,
            "installments": self.installments,
            "card": self.card or {},
            "refunds": list(self.refunds),
        }
