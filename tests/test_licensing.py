"""Signed license keys: real Ed25519 keys, real tampering."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from colmena.domain.licensing import (
    BadSignature,
    License,
    LicenseStatus,
    MalformedKey,
    SigningKeyError,
    TruncatedKey,
    evaluate_status,
    generate_key_pair,
    load_private_key,
    load_public_key,
    sign_license,
    verify_license_key,
)

ISSUED = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def keys():
    pair = generate_key_pair()
    return load_private_key(pair.private_pem), load_public_key(pair.public_pem), pair


def make_license(**overrides) -> License:
    fields = dict(
        license_id="lic_01",
        product="Colmena Industrial",
        edition="industrial",
        customer_email="ana@example.com",
        seats=5,
        issued_at=ISSUED,
        expires_at=ISSUED + timedelta(days=365),
        entitlements=("stamping", "bots", "stamping"),
    )
    fields.update(overrides)
    return License(**fields)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_round_trip_gives_back_the_license(keys):
    private, public, _ = keys
    lic = make_license()
    key = sign_license(lic, private)
    assert "=" not in key and key.count(".") == 1
    decoded = verify_license_key(key, public)
    assert decoded == lic
    assert decoded.issued_at == ISSUED.replace(microsecond=0)
    assert decoded.entitlements == ("bots", "stamping")


def test_payload_is_canonical_json(keys):
    private, _, _ = keys
    payload_text = sign_license(make_license(), private).split(".")[0]
    payload = base64.urlsafe_b64decode(payload_text + "=" * (-len(payload_text) % 4))
    doc = json.loads(payload)
    assert payload == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert doc["expires_at"] == "2026-03-01T12:00:00Z" and doc["perpetual"] is False


def test_perpetual_license_round_trips(keys):
    private, public, _ = keys
    lic = make_license(expires_at=None)
    decoded = verify_license_key(sign_license(lic, private), public)
    assert decoded.perpetual and decoded.expires_at is None


def test_wrapped_key_with_whitespace_still_verifies(keys):
    private, public, _ = keys
    key = sign_license(make_license(), private)
    wrapped = "\n".join(key[i : i + 60] for i in range(0, len(key), 60))
    assert verify_license_key(f"  {wrapped}\n", public) == make_license()


def test_tampered_payload_fails(keys):
    private, public, _ = keys
    payload_text, signature_text = sign_license(make_license(), private).split(".")
    doc = json.loads(base64.urlsafe_b64decode(payload_text + "=" * (-len(payload_text) % 4)))
    doc["seats"] = 500
    forged = _b64(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
    with pytest.raises(BadSignature):
        verify_license_key(f"{forged}.{signature_text}", public)


def test_tampered_signature_fails(keys):
    private, public, _ = keys
    payload_text, signature_text = sign_license(make_license(), private).split(".")
    signature = bytearray(base64.urlsafe_b64decode(signature_text + "=="))
    signature[10] ^= 0x01
    with pytest.raises(BadSignature):
        verify_license_key(f"{payload_text}.{_b64(bytes(signature))}", public)


@pytest.mark.parametrize("cut", [1, 5, 40, 86])
def test_truncated_key_fails(keys, cut):
    private, public, _ = keys
    key = sign_license(make_license(), private)
    with pytest.raises(TruncatedKey):
        verify_license_key(key[:-cut], public)


def test_key_cut_before_signature_fails(keys):
    private, public, _ = keys
    key = sign_license(make_license(), private)
    with pytest.raises(MalformedKey):
        verify_license_key(key[: key.index(".") - 3], public)


def test_wrong_public_key_fails(keys):
    private, _, _ = keys
    other_public = load_public_key(generate_key_pair().public_pem)
    with pytest.raises(BadSignature):
        verify_license_key(sign_license(make_license(), private), other_public)


@pytest.mark.parametrize(
    "garbage",
    ["", "no-dot-here", "a.b.c", "!!!." + "A" * 86, "." + "A" * 86, "x" * 9000],
)
def test_malformed_keys_fail_clearly(keys, garbage):
    _, public, _ = keys
    with pytest.raises(MalformedKey):
        verify_license_key(garbage, public)


def test_non_canonical_base64_is_rejected(keys):
    private, public, _ = keys
    payload_text, signature_text = sign_license(make_license(), private).split(".")
    # The last char of 64 bytes in base64 carries 2 padding bits; flipping one gives another
    # string that lax decoders map to the same bytes.
    last = signature_text[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    alias = alphabet[alphabet.index(last) ^ 1]
    with pytest.raises(MalformedKey):
        verify_license_key(f"{payload_text}.{signature_text[:-1]}{alias}", public)


def test_status_valid_then_expired_and_revoked_wins():
    lic = make_license()
    assert evaluate_status(lic, now=ISSUED + timedelta(days=1)) is LicenseStatus.VALID
    assert evaluate_status(lic, now=lic.expires_at - timedelta(seconds=1)) is LicenseStatus.VALID
    assert evaluate_status(lic, now=lic.expires_at) is LicenseStatus.EXPIRED
    assert (
        evaluate_status(lic, now=ISSUED + timedelta(days=1), revoked=True) is LicenseStatus.REVOKED
    )
    perpetual = make_license(expires_at=None)
    assert evaluate_status(perpetual, now=ISSUED + timedelta(days=10_000)) is LicenseStatus.VALID
    with pytest.raises(ValueError):
        evaluate_status(lic, now=datetime(2025, 1, 1))


def test_pem_forms_and_bad_signing_keys(keys):
    _, _, pair = keys
    assert pair.private_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert pair.public_pem.startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(SigningKeyError):
        load_private_key("not a pem")
    with pytest.raises(SigningKeyError):
        load_private_key(pair.public_pem)


def test_license_rejects_nonsense():
    with pytest.raises(ValueError):
        make_license(seats=0)
    with pytest.raises(ValueError):
        make_license(issued_at=datetime(2025, 1, 1))
    with pytest.raises(ValueError):
        make_license(expires_at=ISSUED - timedelta(days=1))
