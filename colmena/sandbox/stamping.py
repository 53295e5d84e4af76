"""What `colmena dev` stamps with when nothing is configured: the SAT's test CSD and the PAC
sandbox.

The SAT publishes test CSDs for its test taxpayers; the one shipped in ``sat_test_csd/`` is
ESCUELA KEMPER URGATE's (RFC EKU9003173C9, certificate 30001000000500003416, valid from
2023-05-18 to 2027-05-18, password ``12345678a``, all as the SAT publishes them; its fiscal
regime is 601, general de ley personas morales, and its fiscal address postal code 42501).
Invoices sealed with it are accepted by PACs' test environments and by nobody else.

The overlay applies only when no stamping setting at all is configured: with any of them set,
dev uses the operator's configuration as it is (and a missing piece is reported by the stamping
actor's error, as in production).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from colmena.config import Settings
from colmena.sandbox.pac import SANDBOX_TOKEN

PAC_SANDBOX_PATH = "/sandbox/pac"
SAT_TEST_CSD = Path(__file__).parent / "sat_test_csd"
SAT_TEST_ISSUER = {
    "cfdi_issuer_rfc": "EKU9003173C9",
    "cfdi_issuer_name": "ESCUELA KEMPER URGATE",
    "cfdi_issuer_regime": "601",
    "cfdi_issuer_postal_code": "42501",
}
SAT_TEST_CSD_PASSWORD = "12345678a"
PAC_SANDBOX_BANNER = "SAT test CSD, PAC sandbox (SW wire format)"

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


def with_pac_sandbox(settings: Settings, ingress_url: str) -> Settings:
    """Stamp with the SAT's test CSD through the PAC sandbox this ingress serves."""
    return settings.model_copy(
        update={
            "pac_provider": "sw",
            "pac_environment": "TEST",
            "pac_base_url": f"{ingress_url}{PAC_SANDBOX_PATH}",
            "pac_token": SecretStr(SANDBOX_TOKEN),
            "cfdi_csd_cer_path": SAT_TEST_CSD / "EKU9003173C9.cer",
            "cfdi_csd_key_path": SAT_TEST_CSD / "EKU9003173C9.key",
            "cfdi_csd_password": SecretStr(SAT_TEST_CSD_PASSWORD),
            **SAT_TEST_ISSUER,
        }
    )
