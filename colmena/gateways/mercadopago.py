"""Mercado Pago: webhook signatures and the payments API, through the official SDK.

Signatures use the SDK's `WebhookSignatureValidator` (constant-time HMAC-SHA256 over the
`id:<data.id>;request-id:<x-request-id>;ts:<ts>;` manifest), asked twice: with data.id as sent
and, failing that, lowercased, as Mercado Pago's alphanumeric ids are signed lowercased. The
timestamp check is ours, because `ts` arrives in seconds or, from some senders, in milliseconds
(13 digits), and the SDK only knows seconds.

The API client is the SDK's, with two changes: its base URL can be moved (tests and sandboxes
point it at a local server) and its own retries are off, because retries belong to Dramatiq,
which backs off and dead-letters visibly.
"""

from __future__ import annotations

import hashlib
import hmac
import time
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


def _timestamp_seconds(ts: str) -> float:
    value = int(ts)
    return value / 1000 if len(ts) >= MILLISECOND_TS_DIGITS else float(value)


def _parse_ts(header: str) -> str | None:
    for part in header.split(","):
        key, _, value = part.partition("=")
        if key.strip().lower() == "ts":
            return value.strip()
    return None


def _signed_by(
    x_signature: str | None, x_request_id: str | None, data_id: str | None, secret: str
) -> None:
    """Validate with data.id as sent, then lowercased; raise the SDK's error otherwise."""
    candidates = [data_id]
    if data_id is not None and data_id.lower() != data_id:
        candidates.append(data_id.lower())
    for candidate in candidates:
        try:
            WebhookSignatureValidator.validate(x_signature, x_request_id, candidate, secret)
            return
        except InvalidWebhookSignatureError as exc:
            if (
                exc.reason is not SignatureFailureReason.SIGNATURE_MISMATCH
                or candidate is candidates[-1]
            ):
                raise


def verify_signature(
    *,
    x_signature: str | None,
    x_request_id: str | None,
    data_id: str | None,
    secrets: list[str],
    tolerance_s: int,
    now: float | None = None,
) -> None:
    """Raise MercadoPagoSignatureError unless one of our secrets signed it, recently."""
    if (
        x_signature is not None and not x_signature.isascii()
    ):  # the SDK's compare_digest raises TypeError
        raise MercadoPagoSignatureError(SignatureFailureReason.MALFORMED_SIGNATURE_HEADER.value)
    failure: InvalidWebhookSignatureError | None = None
    for secret in secrets:
        try:
            _signed_by(x_signature, x_request_id, data_id, secret)
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
            raise MercadoPagoRejected(f"{what}: HTTP {status}")
        return result["response"]

    def get_payment(self, payment_id: str) -> dict[str, Any]:
        return self._checked(lambda: self._sdk.payment().get(payment_id), f"payment {payment_id}")

    def search_payments(self, filters: dict[str, Any]) -> dict[str, Any]:
        return self._checked(lambda: self._sdk.payment().search(filters=filters), "payment search")
