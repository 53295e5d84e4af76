"""Bitso's "Pay with Bitso" payment intents API, over aiohttp (Bitso has no Python SDK for it).

`POST /payments/v1alpha/payment_intents` with `amount` (a decimal string), `asset`, `type`
"pay_with_bitso", `external_ref` (colmena's order id: the payment_intent webhooks echo it, and
it is all colmena reads back) and `pay_with_bitso` {success_redirect_url, error_redirect_url,
duration}; the answer is the intent, whose `pay_with_bitso.universal_link` is where the buyer
goes. Bitso's API answers `{"success": true, "payload": ...}`, and `{"success": false,
"error": {"code", "message"}}` when it refuses.

Every request is signed as Bitso's API documents ("Create Signed Requests"): the header
`Authorization: Bitso <key>:<nonce>:<signature>`, where the signature is the hex HMAC-SHA256,
keyed by the API secret, of nonce + HTTP method + request path + JSON body, and the nonce an
integer that grows with every call (milliseconds, bumped past the last one sent).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from colmena.gateways.checkout_session import (
    CheckoutRefused,
    CheckoutUnavailable,
    ProviderSession,
    SessionRequest,
)
from colmena.gateways.retry import retryable_http

PROVIDER = "bitso"
INTENTS_PATH = "/payments/v1alpha/payment_intents"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class Nonces:
    """Strictly increasing millisecond nonces for one process."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, int(time.time() * 1000))
            return self._last


NONCES = Nonces()


def signature(secret: str, nonce: int, method: str, path: str, body: str) -> str:
    message = f"{nonce}{method.upper()}{path}{body}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def authorization(key: str, secret: str, method: str, path: str, body: str, nonce: int) -> str:
    return f"Bitso {key}:{nonce}:{signature(secret, nonce, method, path, body)}"


def intent_body(request: SessionRequest, *, duration: str) -> dict[str, Any]:
    """The payment intent for one order."""
    return {
        "amount": str(request.amount),
        "asset": request.currency,
        "external_ref": request.order_id,
        "type": "pay_with_bitso",
        "pay_with_bitso": {
            "success_redirect_url": request.success_url,
            "error_redirect_url": request.cancel_url,
            "duration": duration,
        },
    }


def _refusal(answer: Any) -> str:
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        return f"{error.get('code', '?')} {error.get('message', '')}".strip()
    return "no error body"


async def create_intent(
    request: SessionRequest,
    *,
    api_key: str,
    api_secret: str,
    api_url: str,
    duration: str,
    timeout_s: float,
) -> ProviderSession:
    """Create the payment intent; CheckoutUnavailable or CheckoutRefused when Bitso fails."""
    url = api_url.rstrip("/") + INTENTS_PATH
    body = json.dumps(intent_body(request, duration=duration), separators=(",", ":"))
    headers = {
        "Authorization": authorization(
            api_key, api_secret, "POST", urlsplit(url).path, body, NONCES.next()
        ),
        "Content-Type": "application/json",
        IDEMPOTENCY_HEADER: request.idempotency_key,
    }
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.post(url, data=body, headers=headers) as response,
        ):
            status = response.status
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                answer = None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise CheckoutUnavailable(PROVIDER, f"Bitso unreachable: {type(exc).__name__}") from None
    if retryable_http(status):
        raise CheckoutUnavailable(PROVIDER, f"Bitso answered HTTP {status}")
    if status >= 400 or not isinstance(answer, dict) or answer.get("success") is False:
        raise CheckoutRefused(
            PROVIDER, f"Bitso refused the intent: HTTP {status} {_refusal(answer)}"
        )
    intent = answer.get("payload", answer)
    link = (intent.get("pay_with_bitso") or {}).get("universal_link")
    if not intent.get("id") or not link:
        raise CheckoutRefused(PROVIDER, "the payment intent has no id or universal_link")
    return ProviderSession(provider_ref=str(intent["id"]), redirect_url=str(link))
