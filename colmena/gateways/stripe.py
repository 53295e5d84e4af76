"""Stripe webhook verification with Stripe's own library.

`stripe.WebhookSignature.verify_header` is the check `stripe.Webhook.construct_event` runs on
the raw bytes (constant-time compare, every v1 signature in the header, timestamp tolerance); we
call it once per configured endpoint secret so a secret roll needs no downtime, and parse the
JSON ourselves because the inbox stores the plain event, not a StripeObject. The library refuses
only timestamps too far in the past; one dated further ahead than the same tolerance (a clock
gone wrong, or a signature made to outlive its replay window) is refused here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import stripe

from colmena.errors import ColmenaError


class StripeError(ColmenaError):
    """Root of every refusal of a Stripe webhook: none heals by trying the same bytes again."""

    retryable = False


class StripeSignatureError(StripeError):
    """Not signed by any configured secret, stale, or no usable header; the reason is for logs."""


class StripeEventError(StripeError):
    """Signed, but not a JSON Stripe event."""


def _signed_timestamp(header: str) -> int:
    """The `t=` value the signature covers, read as the library reads it (the first one)."""
    pairs = [item.split("=", 2) for item in header.split(",")]
    return int(next(pair[1] for pair in pairs if pair[0] == "t"))


def verify_signature(
    payload: bytes, header: str | None, secrets: Sequence[str], *, tolerance_s: int
) -> None:
    if not header:
        raise StripeSignatureError("missing Stripe-Signature header")
    if not header.isascii():  # Stripe's compare_digest raises TypeError on non-ASCII text
        raise StripeSignatureError("Stripe-Signature is not ASCII")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise StripeSignatureError("body is not UTF-8") from None
    reasons = []
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance_s)
        except stripe.SignatureVerificationError as exc:
            reasons.append(exc.user_message or str(exc))
            continue
        if _signed_timestamp(header) > time.time() + tolerance_s:
            raise StripeSignatureError("timestamp in the future beyond tolerance")
        return
    stale = any("tolerance" in reason for reason in reasons)
    raise StripeSignatureError("timestamp outside tolerance" if stale else "no matching signature")


def parse_event(payload: bytes) -> dict[str, Any]:
    """The event as a dict, checked for the fields colmena relies on."""
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
        raise StripeEventError("body is not JSON") from None
    if not isinstance(event, dict):
        raise StripeEventError("event is not a JSON object")
    if (
        not isinstance(event.get("id"), str)
        or not event["id"].startswith("evt_")
        or len(event["id"]) > 255
    ):
        raise StripeEventError("event has no valid id")
    if not isinstance(event.get("type"), str) or not event["type"]:
        raise StripeEventError("event has no type")
    if not isinstance(event.get("created"), int):
        raise StripeEventError("event has no created timestamp")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise StripeEventError("event has no data.object")
    return event


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for `payload`, as Stripe would send it (for `colmena trigger`)."""
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)
