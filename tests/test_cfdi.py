"""CFDI 4.0 building, sealing, offline validation, PDF, and CSD inspection."""

from __future__ import annotations

import base64
import datetime as dt
import os
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree
from satcfdi.transform import xslt_transform

from colmena.cli import cli
from colmena.errors import is_permanent
from colmena.gateways.cfdi import (
    CfdiInvalid,
    CsdExpired,
    CsdInvalid,
    CsdMismatch,
    CsdNotAKey,
    CsdWrongPassword,
    check_csd,
    inspect_csd,
    load_signer,
    render_pdf,
    sign_invoice,
    validate_xml,
)
from colmena.gateways.csd import CsdSigner
from colmena.gateways.stamping_config import CsdSource
from tests.standins.csd import (
    ISSUER_RFC,
    CertificateAuthority,
    CsdFiles,
    make_ca,
    make_csd,
    make_expired_csd,
)
from tests.standins.pac import sample_invoice

CFDI4 = "{http://www.sat.gob.mx/cfd/4}"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return make_ca()


@pytest.fixture(scope="module")
def csd(ca: CertificateAuthority) -> CsdFiles:
    return make_csd(ca)


def test_signed_invoice_is_schema_valid_and_its_sello_verifies(csd: CsdFiles) -> None:
    signed = sign_invoice(sample_invoice(), load_signer(csd.certificate, csd.key, csd.password))

    validate_xml(signed.xml)
    root = etree.fromstring(signed.xml)
    assert root.attrib["Version"] == "4.0"
    assert root.attrib["NoCertificado"] == csd.certificate_number
    assert (root.attrib["Serie"], root.attrib["Folio"]) == ("A", "1")
    assert (root.attrib["FormaPago"], root.attrib["MetodoPago"]) == ("03", "PUE")
    # 1250.50 + 3 x 99.99 = 1550.47; IVA 16 %: 200.08 + 47.9952 = 248.0752 -> 248.08
    assert root.attrib["SubTotal"] == "1550.47"
    totals = root.find(f"{CFDI4}Impuestos")
    assert totals is not None and totals.attrib["TotalImpuestosTrasladados"] == "248.08"
    assert root.attrib["Total"] == "1798.55" and signed.total == Decimal("1798.55")
    certificate = x509.load_der_x509_certificate(base64.b64decode(root.attrib["Certificado"]))
    cadena = str(xslt_transform(root.tag, "4.0")(root)).encode()
    certificate.public_key().verify(
        base64.b64decode(root.attrib["Sello"]), cadena, padding.PKCS1v15(), hashes.SHA256()
    )  # type: ignore[union-attr,call-arg]


def test_iva_rate_is_configurable_and_none_means_not_subject(csd: CsdFiles) -> None:
    signer = load_signer(csd.certificate, csd.key, csd.password)
    base = sample_invoice()
    reduced = sign_invoice(type(base)(**{**base.__dict__, "iva_rate": Decimal("0.08")}), signer)
    untaxed = sign_invoice(type(base)(**{**base.__dict__, "iva_rate": None}), signer)

    traslado = etree.fromstring(reduced.xml).find(
        f"{CFDI4}Impuestos/{CFDI4}Traslados/{CFDI4}Traslado"
    )
    assert traslado is not None and traslado.attrib["TasaOCuota"] == "0.080000"
    untaxed_root = etree.fromstring(untaxed.xml)
    assert untaxed_root.find(f"{CFDI4}Impuestos") is None
    assert {c.attrib["ObjetoImp"] for c in untaxed_root.iter(f"{CFDI4}Concepto")} == {"01"}
    assert untaxed.total == Decimal("1550.47")


def test_schema_violation_is_reported(csd: CsdFiles) -> None:
    signed = sign_invoice(sample_invoice(), load_signer(csd.certificate, csd.key, csd.password))
    broken = signed.xml.replace(b'UsoCFDI="G03"', b'UsoCFDI="ZZZ"')

    with pytest.raises(CfdiInvalid, match="UsoCFDI"):
        validate_xml(broken)


def test_inspect_csd_reads_rfc_number_and_validity(csd: CsdFiles) -> None:
    info = inspect_csd(csd.certificate)

    assert info.rfc == ISSUER_RFC
    assert info.certificate_number == csd.certificate_number and len(info.certificate_number) == 20
    assert (info.not_before, info.not_after) == (csd.not_before, csd.not_after)
    assert info.days_left(csd.not_after - dt.timedelta(days=30, hours=1)) == 30


def test_expired_csd_is_refused_before_signing(ca: CertificateAuthority) -> None:
    expired = make_expired_csd(ca)
    signer = load_signer(expired.certificate, expired.key, expired.password)

    with pytest.raises(CsdExpired) as caught:
        sign_invoice(sample_invoice(), signer)
    assert caught.value.certificate_number == expired.certificate_number
    assert "renew" in str(caught.value)


def test_csd_of_another_rfc_is_refused(csd: CsdFiles) -> None:
    with pytest.raises(CsdMismatch):
        check_csd(
            inspect_csd(csd.certificate), issuer_rfc="XIA190128J61", at=dt.datetime.now(dt.UTC)
        )


def test_what_is_wrong_with_a_csd_is_said_precisely(
    csd: CsdFiles, ca: CertificateAuthority
) -> None:
    with pytest.raises(CsdWrongPassword, match="^wrong password for the .key$") as caught:
        load_signer(csd.certificate, csd.key, "not-the-password")
    assert caught.value.code == "CSD_WRONG_PASSWORD" and is_permanent(caught.value)
    assert "COLMENA_CFDI_CSD_PASSWORD" in (caught.value.hint or "")
    with pytest.raises(CsdWrongPassword):
        load_signer(csd.certificate, csd.key, "")
    with pytest.raises(CsdNotAKey, match="not a CSD private key"):
        load_signer(csd.certificate, csd.certificate, csd.password)
    plain = serialization.load_der_private_key(csd.key, csd.password.encode()).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(CsdNotAKey, match="it is not encrypted"):
        load_signer(csd.certificate, plain, csd.password)
    with pytest.raises(CsdInvalid, match="belongs to another certificate"):
        load_signer(make_csd(ca).certificate, csd.key, csd.password)
    with pytest.raises(CsdInvalid, match="not a DER certificate"):
        load_signer(b"not a certificate", csd.key, csd.password)


def check_csd_cli(cer: Path, key: Path, password: str) -> Result:
    return CliRunner().invoke(
        cli,
        ["invoices", "check-csd"],
        env={
            "COLMENA_CFDI_CSD_CER_PATH": str(cer),
            "COLMENA_CFDI_CSD_KEY_PATH": str(key),
            "COLMENA_CFDI_CSD_PASSWORD": password,
        },
    )


def test_check_csd_names_a_wrong_password_and_a_key_that_is_no_csd_key(
    csd: CsdFiles, tmp_path: Path
) -> None:
    """With a CSD of the SAT's test issuer (ESCUELA KEMPER URGATE), as `colmena dev` mints."""
    cer, key = csd.write(tmp_path, "EKU9003173C9")
    right = check_csd_cli(cer, key, csd.password)
    assert "EKU9003173C9" in right.output and csd.certificate_number in right.output

    wrong = check_csd_cli(cer, key, "87654321b")
    assert wrong.exit_code == 1
    assert "wrong password for the .key: set COLMENA_CFDI_CSD_PASSWORD" in wrong.output
    assert "87654321b" not in wrong.output and "Traceback" not in wrong.output

    not_a_key = check_csd_cli(cer, cer, csd.password)
    assert not_a_key.exit_code == 1
    assert "the .key is not a CSD private key" in not_a_key.output


def test_pdf_renders(csd: CsdFiles) -> None:
    signed = sign_invoice(sample_invoice(), load_signer(csd.certificate, csd.key, csd.password))

    pdf = render_pdf(signed.xml)

    assert pdf.startswith(b"%PDF-") and len(pdf) > 5000


def _number(signer: CsdSigner) -> str:
    return inspect_csd(signer.signer().certificate_bytes()).certificate_number


def test_csd_signer_loads_once_and_again_when_the_files_are_replaced(
    ca: CertificateAuthority, csd: CsdFiles, tmp_path: Path
) -> None:
    cer, key = csd.write(tmp_path, "csd")
    signer = CsdSigner(CsdSource(cer, key, csd.password))
    loaded = signer.signer()
    assert signer.signer() is loaded and _number(signer) == csd.certificate_number

    renewed = make_csd(ca)
    renewed_cer, renewed_key = renewed.write(tmp_path, "renewed")
    os.replace(renewed_cer, cer)  # as an operator renews it: new files under the old names
    os.replace(renewed_key, key)

    assert signer.signer() is not loaded and _number(signer) == renewed.certificate_number
    assert signer.signer() is signer.signer()


def test_csd_signer_with_missing_files_is_a_permanent_csd_error(
    csd: CsdFiles, tmp_path: Path
) -> None:
    signer = CsdSigner(CsdSource(tmp_path / "none.cer", tmp_path / "none.key", csd.password))
    with pytest.raises(CsdInvalid, match="cannot read the CSD files") as caught:
        signer.signer()
    assert is_permanent(caught.value) and caught.value.code == "CSD_INVALID"
    assert csd.password not in repr(signer.source)


def test_csd_and_schema_errors_are_permanent(ca: CertificateAuthority) -> None:
    expired = make_expired_csd(ca)
    with pytest.raises(CsdExpired) as caught:
        sign_invoice(
            sample_invoice(), load_signer(expired.certificate, expired.key, expired.password)
        )
    assert is_permanent(caught.value) and caught.value.code == "CSD_EXPIRED"
    assert is_permanent(CsdMismatch("another RFC")) and CsdMismatch.code == "CSD_MISMATCH"
    assert is_permanent(CfdiInvalid(["line 1: not a CFDI"]))
