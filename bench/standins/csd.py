"""Throwaway SAT-shaped certificates for the stamping bench, minted by colmena's own generator
(`colmena.sandbox.test_csd`, which explains each field satcfdi reads): a private CA, the
issuer's CSD and the "SAT" certificate the stand-in PAC signs the TimbreFiscalDigital with."""

from __future__ import annotations

from colmena.sandbox import test_csd
from colmena.sandbox.test_csd import (
    ISSUER_NAME,
    ISSUER_RFC,
    CertificateAuthority,
    CsdFiles,
    make_ca,
    make_csd,
)

__all__ = [
    "ISSUER_NAME",
    "ISSUER_RFC",
    "PAC_RFC",
    "RECEIVER_NAME",
    "RECEIVER_RFC",
    "CertificateAuthority",
    "CsdFiles",
    "make_ca",
    "make_csd",
    "make_sat_certificate",
]

RECEIVER_RFC = "URE180429TM6"
RECEIVER_NAME = "UNIVERSIDAD ROBOTICA ESPAÑOLA"
PAC_RFC = "LSO1306189R5"


def make_sat_certificate(ca: CertificateAuthority, *, pac_rfc: str = PAC_RFC) -> CsdFiles:
    """The stand-in PAC's "SAT" certificate (its OU names the stand-in PAC's RFC)."""
    return test_csd.make_sat_certificate(ca, pac_rfc=pac_rfc)
