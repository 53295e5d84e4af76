"""Mercado Pago: webhook signatures and the payments API, through the official SDK.

Signatures use the SDK's `WebhookSignatureValidator` (constant-time HMAC-SHA256 over the
`id:<data.id>;request-id:<x-request-id>;ts:<ts>;` manifest), asked twice: with data.id as sent
and, failing that, lowercased, as Mercado Pago's alphanumeric ids are signed lowercased. The
timestamp check is ours, because `ts` arrives in seconds or, from some senders, in milliseconds
(13 digits), and the SDK only knows seconds. The signature covers data.id, x-request-id and ts,
nothing of the body: `SignedNotification` holds those three as they were signed, and only they
may name a notification (a replay of the headers with another body is the same notification).

The API client is the SDK's, with two changes: its base URL can be moved (tests and sandboxes
point it at a local server) and its own retries are off, because retries belong to Dramatiq,
which backs off and dead-letters visibly. Creating, cancelling and refunding payments serve
`colmena trigger mercadopago` against `colmena dev`'s sandbox, which speaks the same API.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import mercadopago
from mercadopago.config.config import Config
from mercadopago.config.request_options import RequestOptions
from mercadopago.http.http_client import HttpClient
from mercadopago.webhook import (
    InvalidWebhookSignatureError,
    SignatureFailureReason,
    WebhookSignatureValidator,
)
from requests import RequestException

from colmena.errors import ColmenaError
from colmena.gateways.retry import retryable_http

MILLISECOND_TS_DIGITS = 13
# The access token `colmena dev` and `colmena trigger` use with dev's Mercado Pago sandbox when no
# COLMENA_MERCADOPAGO_ACCESS_TOKEN is configured. "TEST-" is how Mercado Pago labels test
# credentials; the sandbox refuses any other kind, so a production token is never sent there.
SANDBOX_ACCESS_TOKEN = "TEST-sandbox-colmena-dev"
# Mercado Pago's test environment: any test card works and its holder name picks the outcome
# (APRO approved, OTHE rejected, CONT still processing); an offline method (OXXO) stays pending.
TEST_CARD = {
    "card_number": "5474925432670366",
    "security_code": "123",
    "expiration_month": 11,
    "expiration_year": 2030,
}
TEST_CARD_METHOD = "master"
TEST_HOLDERS = {"approved": "APRO", "rejected": "OTHE", "in_process": "CONT"}
TEST_OFFLINE_METHOD = "oxxo"
# What a test payment can be made to become through the API alone (a dispute, in_mediation or
# charged_back, is the buyer's doing), and what an existing one can still be turned into.
TEST_STATUSES = (
    "approved",
    "authorized",
    "in_process",
    "pending",
    "rejected",
    "cancelled",
    "refunded",
)
TEST_CHANGES = ("cancelled", "refunded")


class MercadoPagoError(ColmenaError):
    """Root of every Mercado Pago refusal. Permanent unless it says not: the worker's retry
    policy backs off on an unavailable API and dead-letters the rest at once."""

    retryable = False


class MercadoPagoSignatureError(MercadoPagoError):
    """The notification is not signed by our secret, or is stale; `reason` is for logs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MercadoPagoUnavailable(MercadoPagoError):
    """A 5xx, 429, timeout or connection failure: worth retrying later."""

    retryable = True


class MercadoPagoNotFound(MercadoPagoError):
    """The API does not know the payment: retrying will not change that."""


class MercadoPagoRejected(MercadoPagoError):
    """A 4xx other than 404/429 (bad token, forbidden): an operator must act."""


@dataclass(frozen=True)
class SignedNotification:
    """The values Mercado Pago's signature covers, exactly as they entered the manifest."""

    data_id: str | None
    request_id: str | None
    ts: str

    @property
    def manifest(self) -> str:
        """The signed manifest: the notification's dedupe key, since nothing else is signed.
        Two notifications share it only if they share a signature."""
        parts = [f"id:{self.data_id}"] if self.data_id else []
        if self.request_id:
            parts.append(f"request-id:{self.request_id}")
        return ";".join([*parts, f"ts:{self.ts}"]) + ";"


def _timestamp_seconds(ts: str) -> float:
    value = int(ts)
    return value / 1000 if len(ts) >= MILLISECOND_TS_DIGITS else float(value)


def _as_signed(value: str | None) -> str | None:
    """A header or query value as the SDK puts it in the manifest: trimmed, blank is absent."""
    text = value.strip() if value is not None else ""
    return text or None


def _parse_ts(header: str) -> str | None:
    """The `ts` the SDK signs with: the last non-empty one (an earlier one must not be the one
    whose age is checked, or a fresh `ts=` in front would renew an old signature)."""
    found = None
    for part in header.split(","):
        key, separator, value = part.partition("=")
        if separator and key.strip().lower() == "ts" and value.strip():
            found = value.strip()
    return found


def _signed_by(
    x_signature: str | None, x_request_id: str | None, data_id: str | None, secret: str
) -> str | None:
    """Validate with data.id as sent, then lowercased; returns the one that was signed, else
    raises the SDK's error."""
    candidates = [data_id]
    if data_id is not None and data_id.lower() != data_id:
        candidates.append(data_id.lower())
    for candidate in candidates[:-1]:
        try:
            WebhookSignatureValidator.validate(x_signature, x_request_id, candidate, secret)
            return candidate
        except InvalidWebhookSignatureError as exc:
            if exc.reason is not SignatureFailureReason.SIGNATURE_MISMATCH:
                raise
    WebhookSignatureValidator.validate(x_signature, x_request_id, candidates[-1], secret)
    return candidates[-1]


def verify_signature(
    *,
    x_signature: str | None,
    x_request_id: str | None,
    data_id: str | None,
    secrets: list[str],
    tolerance_s: int,
    now: float | None = None,
) -> SignedNotification:
    """What was signed, unless none of our secrets signed it recently: then raise
    MercadoPagoSignatureError."""
    if (
        x_signature is not None and not x_signature.isascii()
    ):  # the SDK's compare_digest raises TypeError
        raise MercadoPagoSignatureError(SignatureFailureReason.MALFORMED_SIGNATURE_HEADER.value)
    if not secrets:
        raise MercadoPagoSignatureError("no webhook secret configured")
    failure: InvalidWebhookSignatureError | None = None
    signed_id = None
    for secret in secrets:
        try:
            signed_id = _signed_by(x_signature, x_request_id, data_id, secret)
            failure = None
            break
        except InvalidWebhookSignatureError as exc:
            failure = exc
            if exc.reason is not SignatureFailureReason.SIGNATURE_MISMATCH:
                break
    if failure is not None:
        raise MercadoPagoSignatureError(failure.reason.value)
    ts = _parse_ts(x_signature or "")
    if ts is None or not ts.isascii() or not ts.isdigit():
        raise MercadoPagoSignatureError(SignatureFailureReason.MALFORMED_SIGNATURE_HEADER.value)
    drift = abs((time.time() if now is None else now) - _timestamp_seconds(ts))
    if drift > tolerance_s:
        raise MercadoPagoSignatureError(SignatureFailureReason.TIMESTAMP_OUT_OF_TOLERANCE.value)
    return SignedNotification(
        data_id=_as_signed(signed_id), request_id=_as_signed(x_request_id), ts=ts
    )


def sign(*, data_id: str, request_id: str, secret: str, ts: int | None = None) -> str:
    """An x-signature header as Mercado Pago sends it (for `colmena trigger` and tests)."""
    stamp = str(int(time.time()) if ts is None else ts)
    manifest = f"id:{data_id};request-id:{request_id};ts:{stamp};"
    digest = hmac.new(secret.encode(), manifest.encode(), hashlib.sha256).hexdigest()
    return f"ts={stamp},v1={digest}"


class _RebasedHttpClient(HttpClient):
    """The SDK's HTTP client, sending to `base_url` instead of the public API."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.public_url = Config().api_base_url

    def request(
        self,
        method: str,
        url: str,
        maxretries: Any = None,
        retry_on: Any = None,
        backoff_factor: Any = None,
        **kwargs: Any,
    ) -> Any:
        if url.startswith(self.public_url):
            url = self.base_url + url[len(self.public_url) :]
        return super().request(
            method, url, maxretries=0, retry_on=retry_on, backoff_factor=backoff_factor, **kwargs
        )


class MercadoPagoClient:
    """Blocking (the SDK uses requests): call it from a thread in async code."""

    def __init__(self, *, access_token: str, base_url: str, timeout_s: float) -> None:
        options = RequestOptions(
            access_token=access_token, connection_timeout=timeout_s, max_retries=0
        )
        self._sdk = mercadopago.SDK(
            access_token, http_client=_RebasedHttpClient(base_url), request_options=options
        )

    def _checked(self, call: Any, what: str) -> dict[str, Any]:
        try:
            result = call()
        except (RequestException, mercadopago.MPServerError, mercadopago.MPConnectionError) as exc:
            raise MercadoPagoUnavailable(f"{what}: {type(exc).__name__}") from None
        status = result["status"]
        if status == 404:
            raise MercadoPagoNotFound(f"{what}: not found")
        if retryable_http(status):
            raise MercadoPagoUnavailable(f"{what}: HTTP {status}")
        if status >= 400:
            answer = result.get("response")
            message = answer.get("message") if isinstance(answer, dict) else None
            raise MercadoPagoRejected(
                f"{what}: HTTP {status}" + (f" ({message})" if message else "")
            )
        return result["response"]

    def get_payment(self, payment_id: str) -> dict[str, Any]:
        return self._checked(lambda: self._sdk.payment().get(payment_id), f"payment {payment_id}")

    def get_merchant_order(self, order_id: str) -> dict[str, Any]:
        return self._checked(
            lambda: self._sdk.merchant_order().get(order_id), f"merchant order {order_id}"
        )

    def search_payments(self, filters: dict[str, Any]) -> dict[str, Any]:
        return self._checked(lambda: self._sdk.payment().search(filters=filters), "payment search")

    def create_card_token(self, card: dict[str, Any]) -> dict[str, Any]:
        """Tokenise card data (`card_number`, `cardholder`, ...): what a payment's `token` names."""
        return self._checked(lambda: self._sdk.card_token().create(card), "card token")

    def create_payment(self, payment: dict[str, Any]) -> dict[str, Any]:
        return self._checked(lambda: self._sdk.payment().create(payment), "payment creation")

    def cancel_payment(self, payment_id: str) -> dict[str, Any]:
        """Cancel a pending, in_process or authorized payment."""
        return self._checked(
            lambda: self._sdk.payment().update(payment_id, {"status": "cancelled"}),
            f"cancelling payment {payment_id}",
        )

    def refund_payment(self, payment_id: str) -> dict[str, Any]:
        """Refund an approved payment in full; the answer is the refund, not the payment."""
        return self._checked(
            lambda: self._sdk.refund().create(payment_id), f"refunding payment {payment_id}"
        )


def create_test_payment(
    client: MercadoPagoClient,
    status: str,
    *,
    amount: Decimal,
    email: str,
    description: str,
    metadata: dict[str, str],
) -> dict[str, Any]:
    """A payment that ends in `status` (one of TEST_STATUSES), made as a buyer of Mercado Pago's
    test environment makes one: a tokenised test card (or OXXO for `pending`), then, for
    `cancelled` and `refunded`, the seller's cancellation or refund. Returns the payment."""
    if status not in TEST_STATUSES:
        raise ValueError(f"a test payment cannot be made {status}")
    order = {
        "transaction_amount": float(amount),
        "description": description,
        "payer": {"email": email},
        "metadata": metadata,
    }
    if status == "pending":
        return client.create_payment(order | {"payment_method_id": TEST_OFFLINE_METHOD})
    holder = TEST_HOLDERS.get(status, TEST_HOLDERS["approved"])
    token = client.create_card_token(TEST_CARD | {"cardholder": {"name": holder}})
    payment = client.create_payment(
        order
        | {
            "token": token["id"],
            "installments": 1,
            "payment_method_id": TEST_CARD_METHOD,
            "capture": status not in ("authorized", "cancelled"),
        }
    )
    if status in TEST_CHANGES:
        return change_test_payment(client, str(payment["id"]), status)
    return payment


def change_test_payment(client: MercadoPagoClient, payment_id: str, status: str) -> dict[str, Any]:
    """Cancel or refund (TEST_CHANGES) an existing payment; returns the payment as it is now."""
    if status == "cancelled":
        return client.cancel_payment(payment_id)
    if status == "refunded":
        client.refund_payment(payment_id)
        return client.get_payment(payment_id)
    raise ValueError(f"a payment cannot be changed to {status}")
