"""Which Fernet keys encrypt tenants' provider keys, from settings.

Production must set COLMENA_SECRET_KEYS (comma-separated, newest first). `colmena dev` without
it generates one key once into ``<COLMENA_DATA_DIR>/secret-keys`` (mode 0600) and says so in the
log, so keys stored in a dev session still decrypt after a restart.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import structlog

from colmena.config import Settings, SettingsError
from colmena.supervisor.secrets import SecretBox, generate_key

log = structlog.get_logger(__name__)

DEV_KEYS_FILE = "secret-keys"


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
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
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
    """The dev key under ``data_dir``, created on first use (hard link: two starters agree)."""
    path = data_dir / DEV_KEYS_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".secret-keys-", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(generate_key() + "\n")
        os.link(tmp, path)
        log.warning(
            "generated a key for tenants' provider keys (development); set COLMENA_SECRET_KEYS in production",
            path=str(path),
        )
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_text(encoding="ascii").strip()
