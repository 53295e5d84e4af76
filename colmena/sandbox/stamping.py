"""What `colmena dev` stamps with when nothing is configured: a CSD minted on this machine and
the PAC sandbox.

The CSD is made the way the SAT's test CSDs are (`colmena.sandbox.test_csd`), for the SAT's test
taxpayer ESCUELA KEMPER URGATE (RFC EKU9003173C9, fiscal regime 601, general de ley personas
morales, postal code 42501), so sandbox invoices look like the SAT's test ones. It is signed by
a private CA, so it is valid nowhere but in this sandbox, never at the SAT or at a PAC.

It is minted once, on the first start, into ``<COLMENA_DATA_DIR>/sandbox-csd/`` (.cer and
.key, mode 0600, key password ``12345678a`` as the SAT gives its test CSDs), valid for four
years from then. Every later start uses the same one, so what was stamped with it stays
verifiable; remove the directory to mint a new one.

The overlay applies only when no stamping setting at all is configured: with any of them set,
dev uses the operator's configuration as it is (and a missing piece is reported by the stamping
actor's error, as in production).
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import shutil
import tempfile
from pathlib import Path

from pydantic import SecretStr

from colmena.config import Settings
from colmena.sandbox.pac import SANDBOX_TOKEN
from colmena.sandbox.test_csd import CSD_PASSWORD, ISSUER_NAME, ISSUER_RFC, make_ca, make_csd

SANDBOX_CSD_DIR = "sandbox-csd"
SANDBOX_CSD_VALIDITY = dt.timedelta(days=4 * 365)
SAT_TEST_ISSUER = {
    "cfdi_issuer_rfc": ISSUER_RFC,
    "cfdi_issuer_name": ISSUER_NAME,
    "cfdi_issuer_regime": "601",
    "cfdi_issuer_postal_code": "42501",
}
PAC_SANDBOX_BANNER = "test CSD minted locally (no fiscal validity), PAC sandbox (SW wire format)"

# Every setting that says how to stamp; one of them set means the operator configured stamping.
STAMPING_SETTINGS = (
    "pac_base_url",
    "pac_api_url",
    "pac_token",
    "pac_user",
    "pac_password",
    "pac_contract",
    "pac_client_id",
    "cfdi_csd_cer_path",
    "cfdi_csd_key_path",
    "cfdi_csd_password",
    *SAT_TEST_ISSUER,
)


# Settings with a default that an operator may still have chosen on purpose.
CHOSEN_SETTINGS = frozenset({"pac_provider", "pac_environment"})


def stamping_configured(settings: Settings) -> bool:
    return bool(CHOSEN_SETTINGS & settings.model_fields_set) or any(
        getattr(settings, name) is not None for name in STAMPING_SETTINGS
    )


def _write_private(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)


def mint_sandbox_csd(directory: Path) -> None:
    """Mint the pair in a private staging directory and rename that into place.

    The .cer and the .key must come from one mint, so they move together: of two processes
    starting at once one rename wins, the other finds the directory taken and drops its own.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-"))
    try:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        # A day of slack before now: an invoice's Fecha is Mexico City time, to the second.
        csd = make_csd(
            make_ca(), not_before=now - dt.timedelta(days=1), not_after=now + SANDBOX_CSD_VALIDITY
        )
        _write_private(staging / f"{ISSUER_RFC}.cer", csd.certificate)
        _write_private(staging / f"{ISSUER_RFC}.key", csd.key)
        try:
            staging.rename(directory)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def sandbox_csd(data_dir: Path) -> tuple[Path, Path]:
    """The sandbox CSD's .cer and .key under `data_dir`, minted if there is none yet."""
    directory = data_dir / SANDBOX_CSD_DIR
    if not directory.exists():
        mint_sandbox_csd(directory)
    return directory / f"{ISSUER_RFC}.cer", directory / f"{ISSUER_RFC}.key"


def with_pac_sandbox(settings: Settings, sandbox_url: str) -> Settings:
    """Stamp with the sandbox CSD (minted on first use) through the PAC sandbox at `sandbox_url`."""
    cer, key = sandbox_csd(settings.data_dir)
    return settings.model_copy(
        update={
            "pac_provider": "sw",
            "pac_environment": "TEST",
            "pac_base_url": sandbox_url,
            # The sandbox also answers for its stamps as the SAT's status service would, so a
            # cancellation in dev is followed to its end without asking the real SAT.
            "sat_status_url": sandbox_url,
            "pac_token": SecretStr(SANDBOX_TOKEN),
            "cfdi_csd_cer_path": cer,
            "cfdi_csd_key_path": key,
            "cfdi_csd_password": SecretStr(CSD_PASSWORD),
            **SAT_TEST_ISSUER,
        }
    )
