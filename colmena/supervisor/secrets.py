"""Tenants' provider keys encrypted at rest with MultiFernet, on the supervisor side only.

Keys are passed in newest first: the first one encrypts, all of them decrypt, so a new key
can be deployed ahead of `colmena keys rotate` re-encrypting the stored rows with it, and the
old key is dropped only afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

_UNREADABLE = "secret token cannot be decrypted with the configured keys"


class SecretDecryptError(ValueError):
    """No configured key opens the token (wrong key set, or the token was altered)."""


def generate_key() -> str:
    return Fernet.generate_key().decode()


class SecretBox:
    def __init__(self, keys: Sequence[str | bytes]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretDecryptError(_UNREADABLE) from exc

    def rotate(self, token: str) -> str:
        """Re-encrypt under the newest key, keeping the token's original timestamp."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretDecryptError(_UNREADABLE) from exc
