"""The Mercado Pago sandbox's state and rules: card tokens, payments, cancellations, refunds.

Kept in memory: a `colmena dev` restart starts an empty sandbox, while colmena's own payments
stay in its database. Payment ids start from the clock in milliseconds, so a payment of a new
run never takes the id of one colmena already holds from an earlier run.

Every rule is Mercado Pago's as its API reference states it: a card token is spent by the
payment that uses it; a repeated `X-Idempotency-Key` answers the first payment again; only a
pending, in_process or authorized payment can be cancelled (2018 otherwise) and only an approved
one refunded (2063). Refusals raise `SandboxError`, which the app renders as the API's error
body.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from colmena.sandbox import mercadopago_search
from colmena.sandbox.mercadopago_cards import (
    AUTHORIZED,
    CARD_BRANDS,
    HOLDER_OUTCOMES,
    OFFLINE_METHODS,
    WAITING_PAYMENT,
    Outcome,
    holder_outcome,
)
from colmena.sandbox.mercadopago_payments import (
    COLLECTOR_ID,
    SandboxError,
    SandboxPayment,
    bad_request,
    money,
    mp_time,
)

CARD_TOKEN_DAYS = 7


def _object(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise bad_request(1, f"{name} must be a JSON object")
    return value


def _amount(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise bad_request(1, f"{name} must be a number")
    amount = Decimal(value)
    if not amount.is_finite() or amount <= 0:
        raise bad_request(1, f"{name} must be positive")
    return amount


def _text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise bad_request(1, f"{name} must be a string")
    return value


def _digits(value: Any, name: str, lengths: range) -> str:
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if not (text.isascii() and text.isdigit() and len(text) in lengths):
        raise bad_request(1, f"invalid parameter {name}")
    return text


class Ledger:
    """The sandbox seller's account: its card tokens and payments."""

    def __init__(self, *, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._ids = itertools.count(int(self._clock().timestamp() * 1000))
        self._refund_ids = itertools.count(int(self._clock().timestamp() * 1000))
        self.payments: dict[int, SandboxPayment] = {}
        self._tokens: dict[str, dict[str, Any]] = {}
        self._idempotent: dict[str, int] = {}

    # --- card tokens ----------------------------------------------------------------------------

    def create_card_token(self, body: Any) -> dict[str, Any]:
        card = _object(body, "the body")
        number = _digits(card.get("card_number"), "card_number", range(13, 20))
        code = _digits(card.get("security_code"), "security_code", range(3, 5))
        month = _digits(card.get("expiration_month"), "expiration_month", range(1, 3))
        year = _digits(card.get("expiration_year"), "expiration_year", range(4, 5))
        if not 1 <= int(month) <= 12:
            raise bad_request(1, "invalid parameter expiration_month")
        holder = _object(card.get("cardholder"), "cardholder")
        name = holder.get("name")
        if not isinstance(name, str) or not name.strip():
            raise bad_request(3000, "You must provide your cardholder_name with your card data.")
        identification = holder.get("identification")
        now = self._clock()
        token_id = secrets.token_hex(16)
        token: dict[str, Any] = {
            "id": token_id,
            "public_key": None,
            "first_six_digits": number[:6],
            "last_four_digits": number[-4:],
            "expiration_month": int(month),
            "expiration_year": int(year),
            "card_number_length": len(number),
            "security_code_length": len(code),
            "cardholder": {
                "name": name,
                "identification": identification if isinstance(identification, Mapping) else {},
            },
            "status": "active",
            "luhn_validation": True,
            "live_mode": False,
            "require_esc": False,
            "date_created": mp_time(now),
            "date_last_updated": mp_time(now),
            "date_due": mp_time(now + timedelta(days=CARD_TOKEN_DAYS)),
        }
        self._tokens[token_id] = token
        return token

    def _spend_token(self, token_id: Any) -> dict[str, Any]:
        if not isinstance(token_id, str) or not token_id:
            raise bad_request(3003, "Invalid card_token_id")
        token = self._tokens.pop(token_id, None)
        if token is None:
            raise bad_request(2006, "Card Token not found")
        return token

    # --- payments -------------------------------------------------------------------------------

    def create_payment(self, body: Any, idempotency_key: str | None) -> tuple[SandboxPayment, bool]:
        """The payment `body` asks for, and whether it is new (False: an idempotent repeat)."""
        if idempotency_key and idempotency_key in self._idempotent:
            return self.payments[self._idempotent[idempotency_key]], False
        request = _object(body, "the body")
        amount = _amount(request.get("transaction_amount"), "transaction_amount")
        payer = _object(request.get("payer"), "payer")
        email = payer.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise bad_request(1, "payer.email must be an email address")
        metadata = request.get("metadata") or {}
        _object(metadata, "metadata")
        installments = request.get("installments", 1)
        if isinstance(installments, bool) or not isinstance(installments, int) or installments < 1:
            raise bad_request(1, "installments must be a positive integer")
        method = _text(request, "payment_method_id")
        capture = request.get("capture", True)
        if not isinstance(capture, bool):
            raise bad_request(1, "capture must be a boolean")
        card: dict[str, Any] | None = None
        if request.get("token") is None and method in OFFLINE_METHODS:
            outcome, type_id = WAITING_PAYMENT, OFFLINE_METHODS[method]
        else:
            token = self._spend_token(request.get("token"))
            holder = token["cardholder"]["name"]
            decided = holder_outcome(holder)
            if decided is None:
                raise bad_request(
                    1,
                    f"sandbox: cardholder name {holder!r} is not one of Mercado Pago's test "
                    f"names ({', '.join(HOLDER_OUTCOMES)})",
                )
            outcome = AUTHORIZED if decided.status == "approved" and not capture else decided
            method = method or CARD_BRANDS.get(token["first_six_digits"][0], "visa")
            type_id = "credit_card"
            card = {
                key: token[key]
                for key in (
                    "first_six_digits",
                    "last_four_digits",
                    "expiration_month",
                    "expiration_year",
                    "cardholder",
                )
            } | {"id": None, "date_created": token["date_created"]}
        if method is None:
            raise bad_request(1, "payment_method_id is required for a payment without a card token")
        now = self._clock()
        payment = SandboxPayment(
            id=next(self._ids),
            amount=amount,
            outcome=outcome,
            created=now,
            updated=now,
            approved=now if outcome.status == "approved" else None,
            method_id=method,
            type_id=type_id,
            email=email,
            description=_text(request, "description"),
            external_reference=_text(request, "external_reference"),
            metadata=dict(metadata),
            installments=installments,
            binary_mode=bool(request.get("binary_mode", False)),
            card=card,
        )
        self.payments[payment.id] = payment
        if idempotency_key:
            self._idempotent[idempotency_key] = payment.id
        return payment, True

    def get(self, payment_id: str) -> SandboxPayment:
        numeric = payment_id.isascii() and payment_id.isdigit()
        found = self.payments.get(int(payment_id)) if numeric else None
        if found is None:
            raise SandboxError(404, "not_found", 2000, "Payment not found")
        return found

    def cancel(self, payment_id: str, body: Any) -> SandboxPayment:
        """`PUT /v1/payments/{id}`: this API's only status update is to `cancelled`."""
        payment = self.get(payment_id)
        status = _object(body, "the body").get("status")
        if status is None:
            raise bad_request(4017, "Status attribute can't be null")
        if status != "cancelled":
            raise bad_request(2016, "Invalid status for update")
        if payment.outcome.status not in ("pending", "in_process", "authorized"):
            raise bad_request(
                2018, "The action requested is not valid for the current payment state"
            )
        payment.outcome = Outcome("cancelled", "by_collector")
        payment.updated = self._clock()
        return payment

    def refund(self, payment_id: str, body: Any) -> dict[str, Any]:
        """`POST /v1/payments/{id}/refunds`: the whole rest without an `amount`, else part."""
        payment = self.get(payment_id)
        if payment.outcome.status != "approved":
            raise bad_request(
                2063, "The action requested is not valid for the current payment state"
            )
        request = _object(body or {}, "the body")
        left = payment.amount - payment.refunded
        amount = left if request.get("amount") is None else _amount(request["amount"], "amount")
        if amount > left:
            raise bad_request(2063, f"amount exceeds what is left to refund ({left})")
        now = self._clock()
        refund = {
            "id": next(self._refund_ids),
            "payment_id": payment.id,
            "amount": money(amount),
            "metadata": {},
            "source": {"id": str(COLLECTOR_ID), "name": "colmena dev sandbox", "type": "collector"},
            "date_created": mp_time(now),
            "unique_sequence_number": None,
            "refund_mode": "standard",
            "adjustment_amount": 0,
            "status": "approved",
            "reason": None,
            "labels": [],
            "amount_refunded_to_payer": money(amount),
            "partition_details": [],
        }
        payment.refunded += amount
        payment.refunds.append(refund)
        payment.updated = now
        whole = payment.refunded == payment.amount
        payment.outcome = (
            Outcome("refunded", "refunded") if whole else Outcome("approved", "partially_refunded")
        )
        return refund

    def search(self, query: Mapping[str, str]) -> dict[str, Any]:
        """`GET /v1/payments/search` over this account's payments."""
        return mercadopago_search.search(self.payments.values(), query, self._clock())
