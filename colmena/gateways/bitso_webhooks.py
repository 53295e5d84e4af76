"""Bitso webhook signatures, checked exactly as Bitso's "Webhook Signatures" page documents.

Every delivery carries two headers: `x-bitso-webhook-event-signature`, a Base64 RSA signature
(SHA256withRSA: PKCS#1 v1.5 with SHA-256), and `x-bitso-key-id`, the id of the Bitso public key
that verifies it. What Bitso signs is not the raw body: it is the body's `payload` object
serialized as compact JSON (Python's `json.dumps(payload, separators=(",", ":"))`); the outer
`{"event", "payload"}` envelope is not signed. An RSA check holds no secret of ours, so there is
no comparison to time; the keys are Bitso's public ones, from settings (config/bitso_settings).

Bitso signs no delivery time and no event id. What the signature does cover is the payload, and
the payload carries the resource's own times (`updated_at`, else `created_at`): a delivery dated
further ahead than the clock skew, or further back than Bitso keeps events (60 days, then they
can no longer be re-delivered), is refused as stale. Replays inside that window are harmless by
construction: an event is keyed by the resource id and status (Bitso's own dedupe advice: "check
the resource identifier (fid, wid, or payload.id) and its status"), all inside the signed bytes,
and the payment state machine never moves a payment backwards.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from colmena.config.dev_files import create_once
from colmena.domain import finite_json
from colmena.errors import ColmenaError

SIGNATURE_HEADER = "x-bitso-webhook-event-signature"
KEY_ID_HEADER = "x-bitso-key-id"
# The key `colmena dev` verifies with and `colmena trigger bitso` signs with: made once under
# COLMENA_DATA_DIR, never Bitso's (nobody but Bitso holds Bitso's private keys).
DEV_KEY_ID = "colmena-dev"
DEV_KEY_FILE = "bitso-dev-webhook-key.pem"
# The fields Bitso's payloads name their resource by: payment intents, deposits, withdrawals.
_RESOURCE_IDS = ("id", "fid", "wid")


class BitsoWebhookError(ColmenaError):
    """Root of every refusal of a Bitso delivery: none heals by sending the same bytes again."""

    retryable = False


class BitsoSignatureError(BitsoWebhookError):
    """Not signed by a configured key, stale, or no usable header; `reason` is for logs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BitsoEventError(BitsoWebhookError):
    """Signed by Bitso, but not an event colmena can key (no resource id, status or time)."""


@dataclass(frozen=True)
class BitsoEvent:
    """A verified delivery: its type, its dedupe key (signed values only) and its body."""

    kind: str
    key: str
    body: dict[str, Any]
    dated: datetime


def signed_bytes(payload: Any) -> bytes:
    """The bytes Bitso signs: the payload object as compact JSON."""
    return json.dumps(payload, separators=(",", ":")).encode()


def _header(value: str | None, name: str) -> str:
    text = (value or "").strip()
    if not text:
        raise BitsoSignatureError(f"missing {name} header")
    if not text.isascii():
        raise BitsoSignatureError(f"{name} is not ASCII")
    return text


def _parsed(body: bytes) -> tuple[dict[str, Any], Any]:
    try:
        document = finite_json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
        raise BitsoSignatureError("body is not JSON: nothing to verify") from None
    if not isinstance(document, dict) or not isinstance(document.get("payload"), dict):
        raise BitsoSignatureError("body has no payload object: nothing to verify")
    return document, document["payload"]


def _check_signature(payload: Any, signature: str, key: rsa.RSAPublicKey) -> None:
    try:
        raw = base64.b64decode(signature, validate=True)
    except binascii.Error:
        raise BitsoSignatureError("signature is not Base64") from None
    try:
        message = signed_bytes(payload)
    except (ValueError, RecursionError):
        raise BitsoSignatureError("payload cannot be serialized") from None
    try:
        key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise BitsoSignatureError("signature does not verify") from None


def payload_time(payload: Mapping[str, Any]) -> datetime | None:
    """When the resource last changed, by Bitso's clock: `updated_at`, else `created_at`."""
    stamp = payload.get("updated_at") or payload.get("created_at")
    if not isinstance(stamp, str):
        return None
    try:
        parsed = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _event_key(kind: str, payload: Mapping[str, Any]) -> str:
    resource = next((payload[name] for name in _RESOURCE_IDS if payload.get(name)), None)
    status = payload.get("status")
    if not isinstance(resource, str | int) or isinstance(resource, bool):
        raise BitsoEventError("payload names no resource (id, fid or wid)")
    if not isinstance(status, str) or not status:
        raise BitsoEventError("payload has no status")
    return f"{kind}:{resource}:{status}"


def verify_delivery(
    body: bytes,
    *,
    signature: str | None,
    key_id: str | None,
    public_keys: Mapping[str, rsa.RSAPublicKey],
    max_age_s: int,
    max_skew_s: int,
    now: datetime | None = None,
) -> BitsoEvent:
    """The verified event, or BitsoSignatureError (401) / BitsoEventError (400)."""
    signature = _header(signature, SIGNATURE_HEADER)
    key = public_keys.get(_header(key_id, KEY_ID_HEADER))
    if key is None:
        raise BitsoSignatureError("unknown x-bitso-key-id (add Bitso's new key to the settings)")
    document, payload = _parsed(body)
    _check_signature(payload, signature, key)
    kind = document.get("event")
    if not isinstance(kind, str) or not kind:
        raise BitsoEventError("delivery has no event type")
    dated = payload_time(payload)
    if dated is None:
        raise BitsoEventError("payload has no updated_at or created_at time")
    age = ((now or datetime.now(UTC)) - dated).total_seconds()
    if age > max_age_s:
        raise BitsoSignatureError(f"stale: the payload is dated {dated.isoformat()}")
    if -age > max_skew_s:
        raise BitsoSignatureError(f"dated in the future: {dated.isoformat()}")
    return BitsoEvent(kind=kind, key=_event_key(kind, payload), body=document, dated=dated)


def sign(payload: Any, private_key: rsa.RSAPrivateKey) -> str:
    """The x-bitso-webhook-event-signature Bitso would send for `payload` (trigger and tests)."""
    raw = private_key.sign(signed_bytes(payload), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode()


def public_key_text(private_key: rsa.RSAPrivateKey) -> str:
    """The public half as Bitso publishes its keys: Base64 DER SubjectPublicKeyInfo."""
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def _new_private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def dev_signing_key(data_dir: Path) -> rsa.RSAPrivateKey:
    """The development signing key under `data_dir`, created on first use (mode 0600)."""
    text, _created = create_once(data_dir / DEV_KEY_FILE, _new_private_key_pem)
    key = serialization.load_pem_private_key(text.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise BitsoWebhookError(f"{data_dir / DEV_KEY_FILE} is not an RSA private key")
    return key
