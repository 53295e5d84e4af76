"""Provider-key secrets with real keys: MultiFernet at rest (encryption, rotation), X25519
sealing from the ingress to the supervisor, masking."""

from __future__ import annotations

import base64

import pytest

from colmena.domain.key_sealing import (
    SealError,
    decode_key,
    encode_key,
    generate_private_key,
    open_sealed,
    public_key_of,
    seal,
)
from colmena.domain.tenants import mask_last4
from colmena.errors import is_permanent
from colmena.supervisor.secrets import SecretBox, SecretDecryptError, generate_key

PLAINTEXT = "sk-live-0123456789abcdefWXYZ"


def test_round_trip_hides_the_plaintext() -> None:
    box = SecretBox([generate_key()])
    token = box.encrypt(PLAINTEXT)
    assert PLAINTEXT not in token
    assert box.encrypt(PLAINTEXT) != token  # fresh IV each time
    assert box.decrypt(token) == PLAINTEXT


def test_the_newest_key_encrypts() -> None:
    new, old = generate_key(), generate_key()
    token = SecretBox([new, old]).encrypt(PLAINTEXT)
    assert SecretBox([new]).decrypt(token) == PLAINTEXT
    with pytest.raises(SecretDecryptError):
        SecretBox([old]).decrypt(token)


def test_rotation_re_encrypts_with_the_new_key_while_the_old_still_decrypts() -> None:
    old, new = generate_key(), generate_key()
    stored = SecretBox([old]).encrypt(PLAINTEXT)
    during = SecretBox([new, old])

    assert during.decrypt(stored) == PLAINTEXT  # rows not yet rotated keep working
    rotated = during.rotate(stored)
    assert rotated != stored
    assert SecretBox([new]).decrypt(rotated) == PLAINTEXT
    with pytest.raises(SecretDecryptError):
        SecretBox([old]).decrypt(rotated)
    with pytest.raises(SecretDecryptError):
        SecretBox([new]).decrypt(stored)  # why the old key stays until every row is rotated


def test_a_tampered_or_foreign_token_is_refused() -> None:
    box = SecretBox([generate_key()])
    token = box.encrypt(PLAINTEXT)
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(SecretDecryptError):
        box.decrypt(tampered)
    with pytest.raises(SecretDecryptError):
        box.rotate(SecretBox([generate_key()]).encrypt(PLAINTEXT))


def test_keys_are_required() -> None:
    with pytest.raises(ValueError):
        SecretBox([])


def test_mask_shows_only_the_last_four() -> None:
    assert mask_last4(PLAINTEXT) == "****WXYZ"
    assert mask_last4("short") == "****"


# Sealing ---------------------------------------------------------------------------------------

SUPERVISOR = generate_private_key()
FOR_ACME = {"tenant_id": "acme", "provider": "binance"}


def test_a_sealed_key_opens_only_with_the_private_key_for_its_tenant_and_provider() -> None:
    sealed = seal(public_key_of(SUPERVISOR), PLAINTEXT, **FOR_ACME)
    assert PLAINTEXT not in sealed and PLAINTEXT[-8:] not in sealed
    assert seal(public_key_of(SUPERVISOR), PLAINTEXT, **FOR_ACME) != sealed  # fresh each time
    assert open_sealed(SUPERVISOR, sealed, **FOR_ACME) == PLAINTEXT

    for wrong in (
        {"tenant_id": "other", "provider": "binance"},  # copied into another tenant's row
        {"tenant_id": "acme", "provider": "kraken"},  # filed under another provider
    ):
        with pytest.raises(SealError):
            open_sealed(SUPERVISOR, sealed, **wrong)
    with pytest.raises(SealError):
        open_sealed(generate_private_key(), sealed, **FOR_ACME)  # another supervisor's key


def test_an_altered_sealed_key_is_refused_permanently() -> None:
    sealed = seal(public_key_of(SUPERVISOR), PLAINTEXT, **FOR_ACME)
    version, body = sealed.split(".")
    raw = bytearray(base64.urlsafe_b64decode(body))
    for at in (0, 40, len(raw) - 1):  # the ephemeral key, the ciphertext, the tag
        altered = bytearray(raw)
        altered[at] ^= 0x01
        candidate = f"{version}.{base64.urlsafe_b64encode(bytes(altered)).decode()}"
        with pytest.raises(SealError) as refused:
            open_sealed(SUPERVISOR, candidate, **FOR_ACME)
        assert is_permanent(refused.value)
    for garbage in ("", "v1.", "v1.!!!", "v2." + body, "v1." + body[:40]):
        with pytest.raises(SealError):
            open_sealed(SUPERVISOR, garbage, **FOR_ACME)


def test_keys_travel_as_text_and_bad_text_is_refused() -> None:
    text = encode_key(public_key_of(SUPERVISOR))
    assert len(text) == 43 and decode_key(text) == public_key_of(SUPERVISOR)
    for bad in ("", "not base64!", encode_key(b"short")):
        with pytest.raises(SealError):
            decode_key(bad)
