"""Stripe webhooks with Stripe's own library: verification, and the API calls thin events need.

`stripe.WebhookSignature.verify_header` is the check `stripe.Webhook.construct_event` runs on
the raw bytes (constant-time compare, every v1 signature in the header, timestamp tolerance); we
call it once per configured endpoint secret so a secret roll needs no downtime, and parse the
JSON ourselves because the inbox stores the plain event, not a StripeObject. The library refuses
only timestamps too far in the past; one dated further ahead than the same tolerance (a clock
gone wrong, or a signature made to outlive its replay window) is refused here.

Event destinations may send thin events instead (`"object": "v2.core.event"`): signed the same
way, carrying no object, only a `related_object` reference. `StripeEvents` reads one with the
library's `parse_event_notification_without_verification` (the ingress verified it) and fetches
its related object through the API, which is the state colmena acts on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import stripe

from colmena.domain import finite_json
from colmena.errors import ColmenaError
from colmena.gateways.retry import retryable_http

THIN_EVENT_OBJECT = "v2.core.event"


class StripeError(ColmenaError):
    """Root of every refusal of a Stripe webhook: none heals by trying the same bytes again."""

    retryable = False


class StripeSignatureError(StripeError):
    """Not signed by any configured secret, stale, or no usable header; the reason is for logs."""


class StripeEventError(StripeError):
    """Signed, but not a JSON Stripe event."""


class StripeUnavailable(StripeError):
    """The API did not answer, or answered 429 or 5xx: worth retrying later."""

    retryable = True


class StripeApiRejected(StripeError):
    """The API refused the request (unknown object, bad key): retrying will not change that."""


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


def is_thin(event: dict[str, Any]) -> bool:
    return event.get("object") == THIN_EVENT_OBJECT


def parse_event(payload: bytes) -> dict[str, Any]:
    """The event (a snapshot event, or a thin one) as a dict, checked for the fields colmena
    relies on."""
    try:
        event = finite_json.loads(payload)
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
    if is_thin(event):
        return _checked_thin(event)
    if not isinstance(event.get("created"), int):
        raise StripeEventError("event has no created timestamp")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise StripeEventError("event has no data.object")
    return event


def _checked_thin(event: dict[str, Any]) -> dict[str, Any]:
    """A thin event: `created` is an RFC 3339 time, `related_object` (when present) names what to
    fetch by id, type and API path."""
    try:
        datetime.fromisoformat(str(event.get("created")).replace("Z", "+00:00"))
    except ValueError:
        raise StripeEventError("thin event has no created time") from None
    related = event.get("related_object")
    if related is not None and not (
        isinstance(related, dict)
        and all(isinstance(related.get(key), str) for key in ("id", "type", "url"))
        and str(related["url"]).startswith("/v")
    ):
        raise StripeEventError("thin event has an unusable related_object")
    return event


class StripeEvents:
    """Fetches what thin events refer to. Blocking (the library uses requests): call it from a
    thread. The library's own retries are off: retries belong to Dramatiq."""

    def __init__(self, *, api_key: str, api_base: str, timeout_s: float) -> None:
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base.rstrip("/")},
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=timeout_s),
        )

    def related_object(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The thin event's related object as the API has it now; None when it names none."""
        try:
            notification: Any = self._client.parse_event_notification_without_verification(
                json.dumps(event)
            )
        except (KeyError, TypeError, ValueError) as exc:  # signed, but not as Stripe documents
            raise StripeEventError(f"thin event {event.get('id')} is malformed: {exc!r}") from None
        fetch = getattr(notification, "fetch_related_object", None)
        if fetch is None or getattr(notification, "related_object", None) is None:
            return None
        try:
            related = fetch()
        except stripe.StripeError as exc:
            status = exc.http_status
            what = f"{event['related_object']['type']} of {event['id']}"
            if status is None or retryable_http(status):
                raise StripeUnavailable(f"{what}: {type(exc).__name__}") from None
            raise StripeApiRejected(f"{what}: HTTP {status} ({exc.code or 'no code'})") from None
        return dict(related.to_dict())


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for `payload`, as Stripe would send it (for `colmena trigger`)."""
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)
