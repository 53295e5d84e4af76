"""Bitso webhook settings: the public keys that verify deliveries, and the age window.

Bitso signs webhooks with RSA keys of its own and publishes the public halves ("List webhook
public keys": Base64-encoded DER SubjectPublicKeyInfo, each with a `key_id`). They are not
secret. colmena takes them from here rather than fetching them when an unknown key id arrives,
so a forged `x-bitso-key-id` never makes the ingress call out; during a rotation both keys are
listed. A key that does not parse stops the process at start, naming the variable.
"""

from __future__ import annotations

import base64
import binascii
import functools

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pydantic import BaseModel, Field, field_validator

# Bitso keeps webhook events for 60 days and re-delivers any of them on request ("Retrying
# Events"): a genuine delivery is never dated further back than that, plus a day of slack.
BITSO_MAX_EVENT_AGE_S = 61 * 24 * 3600


@functools.cache
def bitso_public_key(text: str) -> RSAPublicKey:
    """An RSA public key from Bitso's Base64 DER text; ValueError if it is not one."""
    try:
        key = load_der_public_key(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise ValueError("not a Base64 DER (SubjectPublicKeyInfo) public key") from None
    if not isinstance(key, RSAPublicKey):
        raise ValueError("not an RSA public key (Bitso signs with SHA256withRSA)")
    return key


class BitsoSettings(BaseModel):
    bitso_webhook_public_keys: dict[str, str] = Field(
        default_factory=dict,
        description=(
            'JSON object {"<key_id>": "<Base64 DER public key>", ...} as Bitso\'s "List webhook '
            'public keys" returns them; empty means /webhooks/bitso answers 503 not_configured'
        ),
    )
    bitso_max_event_age_s: int = Field(
        default=BITSO_MAX_EVENT_AGE_S,
        ge=60,
        le=90 * 24 * 3600,
        description="refuse a delivery whose signed payload is dated further back than this",
    )
    bitso_clock_skew_s: int = Field(
        default=300,
        ge=1,
        le=3600,
        description="refuse a delivery whose signed payload is dated further ahead than this",
    )

    @field_validator("bitso_webhook_public_keys")
    @classmethod
    def _check_bitso_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key_id, text in value.items():
            if not key_id.strip():
                raise ValueError("an empty key id")
            try:
                bitso_public_key(text.strip())
            except ValueError as exc:
                raise ValueError(f"key {key_id!r}: {exc}") from None
        return {key_id.strip(): text.strip() for key_id, text in value.items()}

    def bitso_public_keys(self) -> dict[str, RSAPublicKey]:
        """The configured public keys by key id, parsed (once per key text)."""
        return {
            key_id: bitso_public_key(text)
            for key_id, text in self.bitso_webhook_public_keys.items()
        }
