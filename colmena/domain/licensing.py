"""Signed license keys that customers' software can check offline.

A key is ``<base64url(payload)>.<base64url(signature)>`` (no padding) where the payload is
the canonical JSON of the license (sorted keys, compact separators, UTF-8) and the signature
is Ed25519 over exactly those payload bytes. Ed25519 keeps keys short enough to paste and
needs nothing but the 32-byte public key to verify, in any language.

Decoding is strict (one alphabet, canonical base64, exact lengths) so each license has exactly
one key string: a key can then be looked up or compared as text without aliases.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from colmena.errors import PermanentError

log = structlog.get_logger(__name__)

FORMAT_VERSION = 1
_SIGNATURE_CHARS = 86  # len(base64url(64 bytes)) without padding
# A URL path segment and a CLI argument must stay small; real keys are a few hundred chars.
MAX_KEY_CHARS = 8192
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class LicenseKeyError(ValueError):
    """A key string that does not prove a license; the message says why, for the customer."""


class MalformedKey(LicenseKeyError):
    """Not shaped like a key at all (wrong parts, alphabet, encoding or payload)."""


class TruncatedKey(LicenseKeyError):
    """Shaped like a key but cut short, typically by copy-paste or line wrapping."""


class BadSignature(LicenseKeyError):
    """Well formed, but the signature does not hold: altered, or signed with another key."""


class SigningKeyError(PermanentError):
    """A configured PEM that is not a usable Ed25519 key: permanent until the setting changes."""


class LicenseStatus(StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class License:
    """The signed facts. ``expires_at`` None means perpetual.

    Times are truncated to whole seconds in UTC because the payload is read by customers'
    software in any language, and RFC 3339 with seconds and ``Z`` parses everywhere.
    """

    license_id: str
    product: str
    edition: str
    customer_email: str
    seats: int
    issued_at: datetime
    expires_at: datetime | None = None
    entitlements: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("license_id", "product", "edition"):
            if not getattr(self, name):
                raise ValueError(f"license {name} must not be empty")
        if "@" not in self.customer_email:
            raise ValueError("customer_email must be an email address")
        if isinstance(self.seats, bool) or not isinstance(self.seats, int) or self.seats < 1:
            raise ValueError("seats must be a positive integer")
        issued_at = _utc_seconds(self.issued_at, "issued_at")
        object.__setattr__(self, "issued_at", issued_at)
        if self.expires_at is not None:
            expires_at = _utc_seconds(self.expires_at, "expires_at")
            if expires_at <= issued_at:
                raise ValueError("expires_at must be after issued_at")
            object.__setattr__(self, "expires_at", expires_at)
        if any(not isinstance(e, str) or not e for e in self.entitlements):
            raise ValueError("entitlements must be non-empty strings")
        object.__setattr__(self, "entitlements", tuple(sorted(set(self.entitlements))))

    @property
    def perpetual(self) -> bool:
        return self.expires_at is None

    def to_document(self) -> dict[str, Any]:
        """The JSON-ready mapping that is signed; also what ``license.json`` shows."""
        return {
            "v": FORMAT_VERSION,
            "license_id": self.license_id,
            "product": self.product,
            "edition": self.edition,
            "customer_email": self.customer_email,
            "seats": self.seats,
            "issued_at": _rfc3339(self.issued_at),
            "expires_at": None if self.expires_at is None else _rfc3339(self.expires_at),
            "perpetual": self.perpetual,
            "entitlements": list(self.entitlements),
        }

    @classmethod
    def from_document(cls, doc: Any) -> License:
        if not isinstance(doc, dict):
            raise MalformedKey("license payload is not a JSON object")
        if doc.get("v") != FORMAT_VERSION:
            raise MalformedKey(f"unsupported license format version {doc.get('v')!r}")
        try:
            expires = doc["expires_at"]
            if doc["perpetual"] is not (expires is None):
                raise ValueError("perpetual contradicts expires_at")
            return cls(
                license_id=_str(doc["license_id"]),
                product=_str(doc["product"]),
                edition=_str(doc["edition"]),
                customer_email=_str(doc["customer_email"]),
                seats=doc["seats"],
                issued_at=_parse_time(doc["issued_at"]),
                expires_at=None if expires is None else _parse_time(expires),
                entitlements=tuple(doc["entitlements"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedKey(f"license payload is invalid: {exc}") from exc


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: str


def generate_key_pair() -> KeyPair:
    """A new signing key (unencrypted PKCS8, meant for a secret store) and its public half."""
    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    return KeyPair(private_pem=private_pem, public_pem=public_key_pem(private_key))


def public_key_pem(private_key: Ed25519PrivateKey) -> str:
    """SubjectPublicKeyInfo PEM: the form served to customers and embedded in their software."""
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def load_private_key(pem: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise SigningKeyError("license signing key is not a readable unencrypted PEM") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError("license signing key must be Ed25519")
    return key


def load_public_key(pem: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise SigningKeyError("license public key is not a readable PEM") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError("license public key must be Ed25519")
    return key


def canonical_payload(license: License) -> bytes:
    return json.dumps(
        license.to_document(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def sign_license(license: License, private_key: Ed25519PrivateKey) -> str:
    payload = canonical_payload(license)
    signature = private_key.sign(payload)
    log.info("license_signed", license_id=license.license_id, product=license.product)
    return f"{_b64encode(payload)}.{_b64encode(signature)}"


def verify_license_key(key: str, public_key: Ed25519PublicKey) -> License:
    """The license a key proves, or a ``LicenseKeyError`` subclass saying what is wrong.

    Whitespace anywhere is ignored: keys pasted from email are often wrapped.
    """
    compact = "".join(key.split())
    if len(compact) > MAX_KEY_CHARS:
        raise MalformedKey("license key is too long")
    parts = compact.split(".")
    if len(parts) != 2 or not parts[0]:
        raise MalformedKey("license key must be <payload>.<signature>; was it cut short?")
    payload_text, signature_text = parts
    if len(signature_text) < _SIGNATURE_CHARS:
        raise TruncatedKey("license key is truncated: the signature is incomplete")
    if len(signature_text) > _SIGNATURE_CHARS:
        raise MalformedKey("license key signature is too long")
    payload = _b64decode(payload_text)
    signature = _b64decode(signature_text)
    try:
        public_key.verify(signature, payload)
    except InvalidSignature:
        raise BadSignature(
            "license key signature does not match: the key was altered or issued by someone else"
        ) from None
    try:
        document = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedKey("license payload is not JSON") from exc
    return License.from_document(document)


def evaluate_status(license: License, *, now: datetime, revoked: bool = False) -> LicenseStatus:
    """Revocation wins over expiry: a revoked license must never read as merely expired."""
    return status_at(expires_at=license.expires_at, revoked=revoked, now=now)


def status_at(*, expires_at: datetime | None, revoked: bool, now: datetime) -> LicenseStatus:
    """`evaluate_status` from the stored facts, for views that hold no verified license."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if revoked:
        return LicenseStatus.REVOKED
    if expires_at is not None and now >= expires_at:
        return LicenseStatus.EXPIRED
    return LicenseStatus.VALID


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Strict: only the URL-safe alphabet and the one canonical encoding of the bytes."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise MalformedKey("license key is not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise MalformedKey("license key is not base64url") from exc
    if _b64encode(raw) != text:
        raise MalformedKey("license key is not canonical base64url")
    return raw


def _utc_seconds(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return value.astimezone(UTC).replace(microsecond=0)


def _rfc3339(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str) or not value.endswith("Z"):
        raise ValueError("times must be RFC 3339 UTC strings ending in Z")
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value
