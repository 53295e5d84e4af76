"""Download-link tokens: how they are drawn, recognised and stored.

A token is 32 random bytes, base64url (43 characters). Only its SHA-256 reaches the database,
so a leaked database or backup holds no working link.
"""

from __future__ import annotations

import hashlib
import re
import secrets

TOKEN_BYTES = 32
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def looks_like_token(text: str) -> bool:
    """Shape only: lets a forged or truncated token be refused without a database query."""
    return _TOKEN.fullmatch(text) is not None


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


def product_name(product_ref: str, edition: str) -> str:
    """How the product is named to the customer in emails and on the download page."""
    return f"{product_ref} ({edition})"
