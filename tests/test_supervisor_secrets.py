"""MultiFernet helpers with real keys: encryption, rotation, masking."""

from __future__ import annotations

import pytest

from colmena.supervisor.secrets import (
    SecretBox,
    SecretDecryptError,
    generate_key,
    mask_last4,
)

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
