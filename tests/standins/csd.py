"""Throwaway SAT-shaped certificates for the tests, minted at test time by colmena's own
generator (`colmena.sandbox.test_csd`, which explains each field satcfdi reads): a private CA,
the issuer's CSD, an expired CSD, and the "SAT" certificate the stand-in PAC signs the
TimbreFiscalDigital with. Real CSDs expire, so none is committed."""

from __future__ import annotations

import datetime as dt

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
    "make_expired_csd",
    "make_sat_certificate",
]

RECEIVER_RFC = "URE180429TM6"
RECEIVER_NAME = "UNIVERSIDAD ROBOTICA ESPAÑOLA"
PAC_RFC = "LSO1306189R5"


def make_expired_csd(ca: CertificateAuthority, *, rfc: str = ISSUER_RFC) -> CsdFiles:
    """A CSD of `rfc` that expired yesterday, after four years."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return make_csd(
        ca,
        rfc=rfc,
        not_before=now - dt.timedelta(days=4 * 365),
        not_after=now - dt.timedelta(days=1),
    )


def make_sat_certificate(ca: CertificateAuthority, *, pac_rfc: str = PAC_RFC) -> CsdFiles:
    """The stand-in PAC's "SAT" certificate (its OU names the stand-in PAC's RFC)."""
    return test_csd.make_sat_certificate(ca, pac_rfc=pac_rfc)
