"""What each part of colmena needs configured before it can do its work, checked up front.

A worker pool for the stamping queue without a CSD would start, take messages and dead-letter
every one of them. Instead, `colmena worker` checks the requirements of the queues it serves
and refuses to start with one line naming the first missing variable, and `colmena check`
prints the readiness of everything. Only presence is checked here (no file is opened, no
server asked); values are never shown.

Against a running `colmena dev`, a part its sandbox stands in for is ready as it is in dev:
the stamping part while dev serves the PAC sandbox (with its locally minted CSD), Mercado Pago
payments while it serves the Mercado Pago sandbox. The dev stack file says which it serves.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace

from colmena.config.settings import Settings, SettingsError

PAC_ACCOUNT = {
    "sw": ("COLMENA_PAC_TOKEN or COLMENA_PAC_USER + COLMENA_PAC_PASSWORD",),
    "finkok": ("COLMENA_PAC_USER + COLMENA_PAC_PASSWORD",),
    "diverza": ("COLMENA_PAC_TOKEN + COLMENA_PAC_CLIENT_ID",),
    "prodigia": ("COLMENA_PAC_USER + COLMENA_PAC_PASSWORD + COLMENA_PAC_CONTRACT",),
}
# The dev sandbox (as named in the dev stack file) that meets every requirement of a part.
PART_SANDBOXES = {"payments": "mercadopago", "stamping": "pac"}


@dataclass(frozen=True)
class Requirement:
    """One thing a part needs: which part, what it is for, the variable(s), whether it is set
    (or, `sandbox`, met by a dev sandbox instead)."""

    part: str
    purpose: str
    variable: str
    ready: bool
    sandbox: bool = False


def _pac_account(settings: Settings) -> bool:
    token, user, password = settings.pac_token, settings.pac_user, settings.pac_password
    match settings.pac_provider:
        case "sw":
            return token is not None or (user is not None and password is not None)
        case "finkok":
            return user is not None and password is not None
        case "diverza":
            return token is not None and settings.pac_client_id is not None
        case "prodigia":
            return user is not None and password is not None and settings.pac_contract is not None
    return False


def requirements(settings: Settings, sandboxes: Collection[str] = ()) -> list[Requirement]:
    """Every requirement of every part, in the order an operator would fix them; `sandboxes`
    are the dev sandboxes served (none outside `colmena dev`)."""
    production = settings.env != "dev"
    issuer = (
        ("COLMENA_CFDI_CSD_CER_PATH", settings.cfdi_csd_cer_path),
        ("COLMENA_CFDI_CSD_KEY_PATH", settings.cfdi_csd_key_path),
        ("COLMENA_CFDI_CSD_PASSWORD", settings.cfdi_csd_password),
        ("COLMENA_CFDI_ISSUER_RFC", settings.cfdi_issuer_rfc),
        ("COLMENA_CFDI_ISSUER_NAME", settings.cfdi_issuer_name),
        ("COLMENA_CFDI_ISSUER_REGIME", settings.cfdi_issuer_regime),
        ("COLMENA_CFDI_ISSUER_POSTAL_CODE", settings.cfdi_issuer_postal_code),
    )
    found = [
        Requirement(
            "database", "every process", "COLMENA_DATABASE_URL", settings.database_url is not None
        ),
        Requirement(
            "broker",
            "every process but dev (its broker is in-process)",
            "COLMENA_BROKER_URL",
            settings.broker_url is not None or not production,
        ),
        Requirement(
            "ingress",
            "share rate limits across ingress processes",
            "COLMENA_REDIS_URL",
            settings.redis_url is not None or not production,
        ),
        Requirement(
            "ingress",
            "limit clients (COLMENA_RATE_LIMIT_PRESET=off is for benchmarks)",
            "COLMENA_RATE_LIMIT_PRESET",
            settings.rate_limit_preset != "off" or not production,
        ),
        Requirement(
            "payments",
            "fetch notified Mercado Pago payments",
            "COLMENA_MERCADOPAGO_ACCESS_TOKEN",
            settings.mercadopago_webhook_secret is None
            or settings.mercadopago_access_token is not None,
        ),
        Requirement(
            "licenses",
            "sign licenses",
            "COLMENA_LICENSE_SIGNING_KEY",
            not production or settings.license_signing_key is not None,
        ),
        Requirement(
            "licenses",
            "email licenses",
            "COLMENA_SMTP_HOST",
            not production or settings.smtp_host is not None,
        ),
        *(
            Requirement("stamping", "stamp CFDI invoices", variable, value is not None)
            for variable, value in issuer
        ),
        Requirement(
            "stamping",
            f"the {settings.pac_provider} PAC account",
            PAC_ACCOUNT[settings.pac_provider][0],
            _pac_account(settings),
        ),
        Requirement(
            "bots",
            "open tenants' provider keys",
            "COLMENA_SECRET_KEYS",
            not production or settings.secret_keys is not None,
        ),
        Requirement(
            "bots",
            "open provider keys the ingress sealed",
            "COLMENA_KEY_SEAL_PRIVATE_KEY",
            not production or settings.key_seal_private_key is not None,
        ),
    ]
    return [
        replace(item, ready=True, sandbox=True)
        if PART_SANDBOXES.get(item.part) in sandboxes
        else item
        for item in found
    ]


def missing_for(settings: Settings, parts: Iterable[str]) -> list[Requirement]:
    """The unmet requirements of `parts` (queue names, plus "database" and "broker")."""
    wanted = set(parts)
    return [item for item in requirements(settings) if item.part in wanted and not item.ready]


def require_ready(settings: Settings, parts: Iterable[str]) -> None:
    """Refuse to start a process for `parts` with one line naming the first missing variable."""
    missing = missing_for(settings, parts)
    if missing:
        first = missing[0]
        more = f" (and {len(missing) - 1} more: `colmena check`)" if len(missing) > 1 else ""
        raise SettingsError(f"{first.part} needs {first.variable} to {first.purpose}{more}")
