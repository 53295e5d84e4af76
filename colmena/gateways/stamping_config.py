"""What stamping needs from the settings: the issuer, the series, the concept defaults, the CSD.

Assembled here rather than in `colmena.config.stamping_settings` because it builds the
invoicing rules' own types and raises colmena's errors, which config may not import. Nothing is
required to start a process: a stamping message whose settings are missing fails permanently
with the names of the variables to set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from colmena.config import Settings
from colmena.domain.invoicing import ConceptDefaults, Issuer
from colmena.errors import PermanentError


class StampingNotConfigured(PermanentError):
    """Settings the stamping actor needs are unset; the message names them."""

    hint = (
        "stamping is not configured: set COLMENA_CFDI_CSD_CER_PATH, COLMENA_CFDI_CSD_KEY_PATH, "
        "COLMENA_CFDI_CSD_PASSWORD and COLMENA_CFDI_ISSUER_* (`colmena check` lists them)"
    )


@dataclass(frozen=True)
class CsdSource:
    """Where the issuer's CSD lives; the password stays out of reprs and logs."""

    certificate: Path
    key: Path
    password: str = field(repr=False)


@dataclass(frozen=True)
class StampingConfig:
    issuer: Issuer
    series: str
    defaults: ConceptDefaults
    csd: CsdSource


def csd_source(settings: Settings) -> CsdSource:
    cer, key, password = (
        settings.cfdi_csd_cer_path,
        settings.cfdi_csd_key_path,
        settings.cfdi_csd_password,
    )
    if cer is None or key is None or password is None:
        unset = [
            name
            for name, value in (("CER_PATH", cer), ("KEY_PATH", key), ("PASSWORD", password))
            if value is None
        ]
        raise StampingNotConfigured(
            f"CFDI stamping needs {', '.join('COLMENA_CFDI_CSD_' + n for n in unset)}"
        )
    return CsdSource(cer, key, password.get_secret_value())


def stamping_config(settings: Settings) -> StampingConfig:
    issuer_fields = {
        "COLMENA_CFDI_ISSUER_RFC": settings.cfdi_issuer_rfc,
        "COLMENA_CFDI_ISSUER_NAME": settings.cfdi_issuer_name,
        "COLMENA_CFDI_ISSUER_REGIME": settings.cfdi_issuer_regime,
        "COLMENA_CFDI_ISSUER_POSTAL_CODE": settings.cfdi_issuer_postal_code,
    }
    missing = [name for name, value in issuer_fields.items() if not value]
    if missing:
        raise StampingNotConfigured(f"CFDI stamping needs {', '.join(missing)}")
    rfc, name, regime, postal_code = (str(value) for value in issuer_fields.values())
    return StampingConfig(
        issuer=Issuer(rfc=rfc, name=name, regime=regime, postal_code=postal_code),
        series=settings.cfdi_series,
        defaults=ConceptDefaults(
            product_key=settings.cfdi_product_key,
            unit_key=settings.cfdi_unit_key,
            payment_form=settings.cfdi_payment_form,
            iva_rate=settings.cfdi_iva_rate,
        ),
        csd=csd_source(settings),
    )
