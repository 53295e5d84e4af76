"""Which keys open tenants' provider keys, from settings: the supervisor side's alone.

Fernet keys encrypt them at rest: production must set COLMENA_SECRET_KEYS (comma-separated,
newest first); `colmena dev` without it generates one key once into
``<COLMENA_DATA_DIR>/secret-keys`` (mode 0600) and says so in the log, so keys stored in a dev
session still decrypt after a restart. The X25519 private key (COLMENA_KEY_SEAL_PRIVATE_KEY)
opens what the ingress sealed on the way in; `colmena dev` makes that pair once as well, into
``<COLMENA_DATA_DIR>/key-seal-private-key``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import structlog

from colmena.config import Settings, SettingsError
from colmena.config.dev_files import create_once
from colmena.domain.key_sealing import (
    SealError,
    decode_key,
    encode_key,
    generate_private_key,
    public_key_of,
)
from colmena.supervisor.secrets import SecretBox, generate_key

log = structlog.get_logger(__name__)

DEV_KEYS_FILE = "secret-keys"
DEV_SEAL_KEY_FILE = "key-seal-private-key"


def configured_keys(settings: Settings) -> list[str]:
    """Fernet keys, newest first; SettingsError when production has none."""
    if settings.secret_keys is not None:
        keys = [
            key.strip() for key in settings.secret_keys.get_secret_value().split(",") if key.strip()
        ]
    elif settings.env == "dev":
        keys = [dev_key(Path(settings.data_dir))]
    else:
        raise SettingsError(
            "COLMENA_SECRET_KEYS is not set (Fernet keys, newest first; make one with "
            "`python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'`)"
        )
    if not keys:
        raise SettingsError("COLMENA_SECRET_KEYS holds no key")
    return keys


def secret_box(settings: Settings) -> SecretBox:
    try:
        return SecretBox(configured_keys(settings))
    except ValueError as exc:
        raise SettingsError(f"invalid setting COLMENA_SECRET_KEYS: {exc}") from None


def key_version(key: str) -> str:
    """A short fingerprint naming a key in the database without revealing it."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def newest_key_version(settings: Settings) -> str:
    return key_version(configured_keys(settings)[0])


def dev_key(data_dir: Path) -> str:
    """The dev key under ``data_dir``, created on first use (two starters agree on one)."""
    path = data_dir / DEV_KEYS_FILE
    text, created = create_once(path, lambda: generate_key() + "\n")
    if created:
        log.warning(
            "generated a key for tenants' provider keys (development); "
            "set COLMENA_SECRET_KEYS in production",
            path=str(path),
        )
    return text.strip()


def seal_private_key(settings: Settings) -> bytes:
    """The X25519 private key that opens provider keys sealed by the ingress."""
    if settings.key_seal_private_key is None:
        raise SettingsError(
            "COLMENA_KEY_SEAL_PRIVATE_KEY is not set on this bots worker "
            "(`colmena keys keygen` makes the pair)"
        )
    try:
        return decode_key(settings.key_seal_private_key.get_secret_value())
    except SealError as exc:
        raise SettingsError(f"invalid setting COLMENA_KEY_SEAL_PRIVATE_KEY: {exc}") from None


def dev_seal_key_pair(data_dir: Path) -> tuple[str, str]:
    """(private, public) key text for `colmena dev`, the private key created on first use."""
    path = data_dir / DEV_SEAL_KEY_FILE
    text, created = create_once(path, lambda: encode_key(generate_private_key()) + "\n")
    if created:
        log.warning(
            "generated the key pair that seals provider keys (development); "
            "set COLMENA_KEY_SEAL_PUBLIC_KEY and COLMENA_KEY_SEAL_PRIVATE_KEY in production",
            path=str(path),
        )
    private = text.strip()
    return private, encode_key(public_key_of(decode_key(private)))
