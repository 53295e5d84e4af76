"""Which Ed25519 key signs and checks licenses, from settings.

Production must configure COLMENA_LICENSE_SIGNING_KEY (workers) and may give the ingress only
COLMENA_LICENSE_PUBLIC_KEY. `colmena dev` with no key generates one once, keeps it in
``<COLMENA_DATA_DIR>/license-signing-key.pem`` (mode 0600) and says so in the log, so licenses
issued in a dev session stay verifiable after a restart.
"""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from colmena.config import Settings
from colmena.domain.licensing import (
    SigningKeyError,
    generate_key_pair,
    load_private_key,
    load_public_key,
)

log = structlog.get_logger(__name__)

DEV_KEY_FILE = "license-signing-key.pem"


class SigningKeyMissing(SigningKeyError):
    """No key is configured where one is required; the message names the setting."""


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    if settings.license_signing_key is not None:
        return _private(settings.license_signing_key.get_secret_value())
    if settings.env == "dev":
        return _private(dev_signing_pem(Path(settings.data_dir)))
    raise SigningKeyMissing(
        "COLMENA_LICENSE_SIGNING_KEY is not set; create one with `colmena license keygen`"
    )


def public_key(settings: Settings) -> Ed25519PublicKey:
    if settings.license_public_key:
        return _public(settings.license_public_key)
    return signing_key(settings).public_key()


def dev_signing_pem(data_dir: Path) -> str:
    """The dev key under ``data_dir``, created on first use.

    Created by hard-linking a complete temporary file into place: of two processes starting at
    once, one link wins and both read the same key; nobody reads a half-written file.
    """
    path = data_dir / DEV_KEY_FILE
    try:
        return path.read_text(encoding="ascii")
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".license-key-", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(generate_key_pair().private_pem)
        os.link(tmp, path)
        log.warning(
            "generated a license signing key for development; set COLMENA_LICENSE_SIGNING_KEY in production",
            path=str(path),
        )
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_text(encoding="ascii")


@lru_cache(maxsize=8)
def _private(pem: str) -> Ed25519PrivateKey:
    return load_private_key(pem)


@lru_cache(maxsize=8)
def _public(pem: str) -> Ed25519PublicKey:
    return load_public_key(pem)
