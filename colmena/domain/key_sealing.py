"""Tenants' provider keys sealed to the supervisor: the ingress can seal, only the supervisor opens.

A sealed box in the HPKE manner: a fresh X25519 key pair per sealed key, its shared secret with
the supervisor's public key stretched by HKDF-SHA256 into a ChaCha20-Poly1305 key. The tenant id
and the provider are the associated data, so a sealed key copied into another tenant's row (or
filed under another provider), or altered in any byte, does not open.

Pure: keys come in as raw bytes (`decode_key` reads their text form from settings) and nothing is
read or written here, so the ingress and the bots workers share this one module.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from colmena.errors import PermanentError

VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
_INFO = b"colmena sealed provider key v1"


class SealError(PermanentError):
    """A sealed key that does not open, or a key that is not an X25519 key.

    Permanent: retrying cannot open what was sealed for someone else or altered.
    """


def generate_private_key() -> bytes:
    """A new supervisor private key (raw 32 bytes)."""
    return X25519PrivateKey.generate().private_bytes_raw()


def public_key_of(private_key: bytes) -> bytes:
    return _private(private_key).public_key().public_bytes_raw()


def encode_key(raw: bytes) -> str:
    """The text form settings hold: URL-safe base64 without padding (43 characters)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_key(text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        raise SealError("not a base64 X25519 key") from None
    if len(raw) != KEY_BYTES:
        raise SealError(f"an X25519 key has {KEY_BYTES} bytes, this one {len(raw)}")
    return raw


def seal(public_key: bytes, plaintext: str, *, tenant_id: str, provider: str) -> str:
    """`plaintext` readable only with the private key of `public_key`, for this tenant/provider."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    shared = ephemeral.exchange(_public(public_key))
    nonce = os.urandom(NONCE_BYTES)
    box = ChaCha20Poly1305(_derive(shared, ephemeral_public, public_key))
    sealed = box.encrypt(nonce, plaintext.encode(), _associated(tenant_id, provider))
    body = base64.urlsafe_b64encode(ephemeral_public + nonce + sealed).decode("ascii")
    return f"{VERSION}.{body}"


def open_sealed(private_key: bytes, sealed: str, *, tenant_id: str, provider: str) -> str:
    """The plaintext; SealError when the key, the tenant, the provider or any byte differs."""
    version, _, body = sealed.partition(".")
    if version != VERSION:
        raise SealError(f"unknown sealed key format {version[:8]!r}")
    try:
        raw = base64.urlsafe_b64decode(body)
    except (binascii.Error, ValueError):
        raise SealError("the sealed key is not base64") from None
    if len(raw) <= KEY_BYTES + NONCE_BYTES:
        raise SealError("the sealed key is truncated")
    ephemeral_public = raw[:KEY_BYTES]
    nonce = raw[KEY_BYTES : KEY_BYTES + NONCE_BYTES]
    recipient = _private(private_key)
    try:
        shared = recipient.exchange(_public(ephemeral_public))
    except ValueError:  # a low-order point: only an altered sealed key carries one
        raise SealError("the sealed key does not open: altered") from None
    own_public = recipient.public_key().public_bytes_raw()
    box = ChaCha20Poly1305(_derive(shared, ephemeral_public, own_public))
    try:
        opened = box.decrypt(
            nonce, raw[KEY_BYTES + NONCE_BYTES :], _associated(tenant_id, provider)
        )
    except InvalidTag:
        raise SealError(
            "the sealed key does not open: another supervisor key, tenant or provider, or altered"
        ) from None
    return opened.decode()


def _derive(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=ephemeral_public + recipient_public,
        info=_INFO,
    )
    return hkdf.derive(shared)


def _associated(tenant_id: str, provider: str) -> bytes:
    # Neither a tenant id nor a provider name can hold NUL, so the joined form is unambiguous.
    return b"\0".join((VERSION.encode(), tenant_id.encode(), provider.encode()))


def _private(raw: bytes) -> X25519PrivateKey:
    if len(raw) != KEY_BYTES:
        raise SealError(f"an X25519 key has {KEY_BYTES} bytes, this one {len(raw)}")
    return X25519PrivateKey.from_private_bytes(raw)


def _public(raw: bytes) -> X25519PublicKey:
    if len(raw) != KEY_BYTES:
        raise SealError(f"an X25519 key has {KEY_BYTES} bytes, this one {len(raw)}")
    return X25519PublicKey.from_public_bytes(raw)
