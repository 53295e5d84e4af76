"""Throwaway SAT-shaped certificates for the stamping bench: a private CA, the issuer's CSD and
the "SAT" certificate the stand-in PAC signs the TimbreFiscalDigital with.

The subject is laid out the way SAT issues them, because that is what satcfdi reads: RFC in
x500UniqueIdentifier (as a PrintableString), CURP in serialNumber, the PAC's RFC in the OU of
the SAT certificate, exactly two extensions, and the 20-digit certificate number as the serial's
ASCII bytes. tests/standins/csd.py explains each field and also mints expired CSDs.
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

ISSUER_RFC = "EKU9003173C9"
ISSUER_NAME = "ESCUELA KEMPER URGATE"
RECEIVER_RFC = "URE180429TM6"
RECEIVER_NAME = "UNIVERSIDAD ROBOTICA ESPAÑOLA"
PAC_RFC = "LSO1306189R5"
CSD_PASSWORD = "12345678a"

_certificate_numbers = itertools.count(30001000000500003416)


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

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        cer = directory / f"{stem}.cer"
        key = directory / f"{stem}.key"
        cer.write_bytes(self.certificate)
        key.write_bytes(self.key)
        return cer, key


def make_ca() -> CertificateAuthority:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "AC DE PRUEBAS COLMENA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SERVICIO DE ADMINISTRACION TRIBUTARIA"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "MX"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
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
) -> CsdFiles:
    """A CSD valid from a year ago to three years on."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
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
        .not_valid_before(now - dt.timedelta(days=365))
        .not_valid_after(now + dt.timedelta(days=3 * 365))
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
            encryption_algorithm=serialization.BestAvailableEncryption(CSD_PASSWORD.encode()),
        ),
        password=CSD_PASSWORD,
    )


def make_sat_certificate(ca: CertificateAuthority, *, pac_rfc: str = PAC_RFC) -> CsdFiles:
    """The certificate behind SelloSAT; its OU names the PAC as satcfdi's `rfc_pac` expects."""
    return make_csd(ca, rfc="SAT970701NN3", name="SAT PRUEBAS COLMENA", branch=f"PAC{pac_rfc}")
