"""Throwaway SAT-shaped certificates: the CSD `colmena dev` stamps with, and those of the tests.

No real CSD is shipped (a real one expires, and belongs to somebody): a private CA is minted,
then CSDs signed by it, and a "SAT" certificate for a PAC to sign the TimbreFiscalDigital with.
None of them is valid at the SAT.

The subject is laid out the way SAT issues them, because that is what satcfdi reads
(``satcfdi.models.certificate.Certificate``):

- ``x500UniqueIdentifier`` (2.5.4.45) = ``"<RFC> / <RFC representante>"``: ``.rfc`` takes the
  part before ``/``. SAT encodes it as a PrintableString, not the BIT STRING X.520 defines.
- ``serialNumber`` (2.5.4.5) = ``" / <CURP representante>"``.
- ``OU`` = branch name; for a PAC's certificate ``"PAC<RFC of the PAC>"`` (``.rfc_pac``).
- exactly two extensions, which is how ``.type`` tells a CSD from a FIEL (four).
- the certificate serial number is SAT's 20-digit certificate number written as ASCII bytes
  (``.certificate_number`` reads every second hex digit back).

The .cer is DER and the .key encrypted PKCS#8 DER, as the SAT hands them out.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

# The SAT's test taxpayer, whose name and RFC the SAT's own test CSDs carry, and the password
# the SAT gives those CSDs' keys.
ISSUER_RFC = "EKU9003173C9"
ISSUER_NAME = "ESCUELA KEMPER URGATE"
CSD_PASSWORD = "12345678a"
SAT_RFC = "SAT970701NN3"
CA_NAME = "AC DE PRUEBAS COLMENA"
# Certificate numbers handed out in turn, 20 digits like the SAT's, in a range no SAT certificate
# has (the SAT's own test CSDs are numbered 30001000000...), so a minted one is never taken for
# one of those.
_certificate_numbers = itertools.count(99998000000000000001)


@dataclass(frozen=True)
class CertificateAuthority:
    name: x509.Name
    key: rsa.RSAPrivateKey


@dataclass(frozen=True)
class CsdFiles:
    """A certificate (DER, as the .cer file) and its key (encrypted PKCS#8 DER, as the .key)."""

    certificate: bytes
    key: bytes
    password: str
    rfc: str
    certificate_number: str
    not_before: dt.datetime
    not_after: dt.datetime

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        cer = directory / f"{stem}.cer"
        key = directory / f"{stem}.key"
        cer.write_bytes(self.certificate)
        key.write_bytes(self.key)
        return cer, key


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def make_ca() -> CertificateAuthority:
    """A private CA named like the SAT's test one, valid ten years either way."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SERVICIO DE ADMINISTRACION TRIBUTARIA"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "MX"),
        ]
    )
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=3650))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(name=certificate.subject, key=key)


def make_csd(
    ca: CertificateAuthority,
    *,
    rfc: str = ISSUER_RFC,
    name: str = ISSUER_NAME,
    branch: str = "Sucursal1",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    password: str = CSD_PASSWORD,
) -> CsdFiles:
    """A CSD valid from ``not_before`` to ``not_after`` (default: a year ago to three years on)."""
    now = _now()
    not_before = not_before or now - dt.timedelta(days=365)
    not_after = not_after or now + dt.timedelta(days=3 * 365)
    number = str(next(_certificate_numbers))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(x509.ObjectIdentifier("2.5.4.41"), name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            x509.NameAttribute(
                NameOID.X500_UNIQUE_IDENTIFIER,
                f"{rfc} / XIQB891116QE4",
                _type=_ASN1Type.PrintableString,
            ),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, " / XIQB891116MGRMZR05"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, branch),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(number.encode(), "big"))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return CsdFiles(
        certificate=certificate.public_bytes(serialization.Encoding.DER),
        key=key.private_bytes(
            encoding=serialization.Encoding.DER,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.BestAvailableEncryption(password.encode()),
        ),
        password=password,
        rfc=rfc,
        certificate_number=number,
        not_before=not_before,
        not_after=not_after,
    )


def make_sat_certificate(ca: CertificateAuthority, *, pac_rfc: str) -> CsdFiles:
    """The certificate behind SelloSAT; its OU names the PAC as satcfdi's ``rfc_pac`` expects."""
    return make_csd(ca, rfc=SAT_RFC, name="SAT PRUEBAS COLMENA", branch=f"PAC{pac_rfc}")
