"""Which Ed25519 key signs and checks licenses: from settings, or from the dev key file.

Production must configure COLMENA_LICENSE_SIGNING_KEY (workers) and may give the ingress only
COLMENA_LICENSE_PUBLIC_KEY. `colmena dev` with no key generates one once, keeps it in
``<COLMENA_DATA_DIR>/license-signing-key.pem`` (mode 0600) and says so in the log, so licenses
issued in a dev session stay verifiable after a restart. The key maths is
`colmena.domain.licensing`'s; this module only finds the PEM.
"""

from __future__ import annotations

import functools
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from colmena.config import Settings
from colmena.config.dev_files import create_once
from colmena.domain.licensing import (
    SigningKeyError,
    generate_key_pair,
    load_private_key,
    load_public_key,
)

log = structlog.get_logger(__name__)

DEV_KEY_FILE = "license-signing-key.pem"

# Parsing a PEM costs more than signing a license with the key: each process parses each of its
# keys (a handful at most) once.
_private_key = functools.lru_cache(maxsize=8)(load_private_key)
_public_key = functools.lru_cache(maxsize=8)(load_public_key)


class SigningKeyMissing(SigningKeyError):
    """No key is configured where one is required; the message names the setting."""


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    if settings.license_signing_key is not None:
        return _private_key(settings.license_signing_key.get_secret_value())
    if settings.env == "dev":
        return _private_key(dev_signing_pem(Path(settings.data_dir)))
    raise SigningKeyMissing(
        "COLMENA_LICENSE_SIGNING_KEY is not set; create one with `colmena license keygen`"
    )


def public_key(settings: Settings) -> Ed25519PublicKey:
    if settings.license_public_key:
        return _public_key(settings.license_public_key)
    return signing_key(settings).public_key()


def dev_signing_pem(data_dir: Path) -> str:
    """The dev key under ``data_dir``, created on first use (of two processes starting at once,
    both end up with the same key)."""
    path = data_dir / DEV_KEY_FILE
    pem, created = create_once(path, lambda: generate_key_pair().private_pem)
    if created:
        log.warning(
            "generated a license signing key for development; "
            "set COLMENA_LICENSE_SIGNING_KEY in production",
            path=str(path),
        )
    return pem
