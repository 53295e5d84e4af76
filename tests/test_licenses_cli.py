"""`colmena license keygen | verify | revoke | resend` as an operator runs them."""

from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from colmena.cli import cli
from colmena.store import licenses as licenses_store
from tests.licenses_support import (
    SIGNING_KEY,
    a_key,
    deliver_inline,
    insert_payment,
    license_settings,
    run_cli,
    tampered,
    token_in,
)
from tests.standins.smtp import SmtpStandin


@pytest.fixture
def smtp():
    with SmtpStandin() as server:
        yield server


def test_keygen_writes_a_key_pair_and_never_prints_the_private_key(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["license", "keygen", "--out-dir", str(tmp_path / "keys")])
    assert result.exit_code == 0, result.output
    private = tmp_path / "keys" / "license-signing-key.pem"
    public = tmp_path / "keys" / "license-public-key.pem"
    assert str(private) in result.output and str(public) in result.output
    assert "PRIVATE KEY" not in result.output and private.read_text() not in result.output
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = a_key(private.read_text())
    verified = runner.invoke(cli, ["license", "verify", key, "--public-key", str(public)])
    assert verified.exit_code == 0 and "signature: valid" in verified.output

    again = runner.invoke(cli, ["license", "keygen", "--out-dir", str(tmp_path / "keys")])
    assert again.exit_code == 1 and "refusing to overwrite" in again.output


def test_verify_prints_the_license_and_exits_0_when_the_signature_holds(tmp_path: Path) -> None:
    key = a_key()
    result = CliRunner().invoke(
        cli,
        ["license", "verify", key],
        env={"COLMENA_LICENSE_SIGNING_KEY": SIGNING_KEY.private_pem},
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output.rsplit("signature:", 1)[0])
    assert document["product"] == "colmena-bot" and document["seats"] == 3
    assert result.output.strip().endswith("signature: valid")


@pytest.mark.parametrize(
    "damage", [tampered, lambda key: key[:-5], lambda key: key.replace(".", "")]
)
def test_a_tampered_or_cut_key_fails_verify_with_exit_1(tmp_path: Path, damage) -> None:
    public = tmp_path / "public.pem"
    public.write_text(SIGNING_KEY.public_pem)
    result = CliRunner().invoke(
        cli, ["license", "verify", damage(a_key()), "--public-key", str(public)]
    )
    assert result.exit_code == 1, result.output
    assert "signature: INVALID" in result.output
    assert "signature: valid" not in result.output


def test_a_tampered_key_shows_what_it_claims_as_unverified(tmp_path: Path) -> None:
    public = tmp_path / "public.pem"
    public.write_text(SIGNING_KEY.public_pem)
    result = CliRunner().invoke(
        cli, ["license", "verify", tampered(a_key()), "--public-key", str(public)]
    )
    assert result.exit_code == 1
    assert "NOT verified" in result.output and '"seats": 300' in result.output
    assert "does not match" in result.output


def test_verify_without_any_key_configured_is_a_settings_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["license", "verify", a_key()],
        env={"COLMENA_LICENSE_SIGNING_KEY": "", "COLMENA_ENV": "production"},
    )
    assert result.exit_code == 2
    assert "COLMENA_LICENSE_SIGNING_KEY is not set" in result.output


async def test_revoke_by_hand_then_status_says_revoked(
    settings, smtp, tmp_path, db, make_client
) -> None:
    active = license_settings(settings, smtp, tmp_path)
    payment_id = await insert_payment(db)
    token = await deliver_inline(active, payment_id, smtp)
    license_id, key = await db.fetchrow("SELECT id, license_key FROM licenses")

    result = await run_cli(active, ["license", "revoke", str(license_id), "--reason", "fraud"])
    assert result.exit_code == 0, result.output
    assert "revoked" in result.output
    assert await db.fetchval("SELECT revoked_reason FROM licenses") == "fraud"
    client = await make_client(active)
    assert (await (await client.get(f"/licenses/{key}/status")).json())["status"] == "revoked"
    assert (await client.post(f"/downloads/{token}")).status == 410

    again = await run_cli(active, ["license", "revoke", str(license_id)])
    assert again.exit_code == 0 and "already revoked" in again.output
    resend = await run_cli(active, ["license", "resend", str(license_id)])
    assert resend.exit_code == 1 and "is revoked" in resend.output
    unknown = await run_cli(active, ["license", "revoke", str(uuid.uuid4())])
    assert unknown.exit_code == 1 and "no license" in unknown.output


async def test_resend_invalidates_the_old_link_at_once_and_mails_a_new_one(
    settings, smtp, tmp_path, db, start_worker, make_client
) -> None:
    active = license_settings(settings, smtp, tmp_path)
    old_token = await deliver_inline(active, await insert_payment(db), smtp)
    license_id = await db.fetchval("SELECT id FROM licenses")
    start_worker(settings_override=active)

    result = await run_cli(active, ["license", "resend", str(license_id)])
    assert result.exit_code == 0, result.output
    client = await make_client(active)
    old = await client.post(f"/downloads/{old_token}")
    assert old.status == 410 and "reemplazado" in await old.text()
    new_mail = (await smtp.wait_for_async(2))[1]
    assert (await client.post(f"/downloads/{token_in(new_mail)}")).status == 200


async def test_list_and_show_find_licenses_by_payment_or_email(
    settings, smtp, tmp_path, db
) -> None:
    active = license_settings(settings, smtp, tmp_path)
    ana = await insert_payment(db, email="ana@example.com")
    await deliver_inline(active, ana, smtp)
    bob = await insert_payment(db, email="bob@example.com")
    await deliver_inline(active, bob, smtp)
    ana_license, ana_pi = await db.fetchrow(
        "SELECT l.id, p.provider_payment_id FROM licenses l JOIN payments p ON p.id = l.payment_id"
        " WHERE p.id = $1",
        ana,
    )
    bob_license = await db.fetchval("SELECT id FROM licenses WHERE payment_id = $1", bob)

    listed = await run_cli(active, ["license", "list"])
    assert listed.exit_code == 0, listed.output
    rows = listed.output.splitlines()[1:]
    assert [row.split()[0] for row in rows] == [str(bob_license), str(ana_license)]
    assert all(" 499.00 USD " in row and " valid " in row for row in rows)
    assert all(row.split()[-3:-1] == ["sent", "usable"] for row in rows)

    found = await run_cli(active, ["license", "list", "--email", "ANA@example.com", "--json"])
    [document] = json.loads(found.output)
    assert (document["license_id"], document["provider_payment_id"]) == (str(ana_license), ana_pi)
    assert (document["amount"], document["currency"], document["seats"]) == ("499.00", "USD", 3)
    assert (document["status"], document["email"], document["link"]) == ("valid", "sent", "usable")
    by_payment = await run_cli(active, ["license", "list", "--payment", str(ana), "--json"])
    assert [item["license_id"] for item in json.loads(by_payment.output)] == [str(ana_license)]

    for which in (ana_pi, str(ana), "ana@example.com", str(ana_license)):
        shown = await run_cli(active, ["license", "show", which])
        assert shown.exit_code == 0, shown.output
        assert f"license   {ana_license}\n" in shown.output
        assert f"payment   stripe {ana_pi} (#{ana}), 499.00 USD\n" in shown.output
        assert "email #" in shown.output and "purchase: sent " in shown.output
        assert "usable, 0/1 downloads, expires " in shown.output
        assert f"resend    colmena license resend {ana_license}" in shown.output

    await run_cli(active, ["license", "revoke", str(bob_license), "--reason", "fraud"])
    revoked = await run_cli(active, ["license", "show", "bob@example.com"])
    assert "status    revoked at " in revoked.output and "(fraud)" in revoked.output
    assert "revoked, 0/1 downloads" in revoked.output and "resend " not in revoked.output

    await licenses_store.suspend(db, ana, "stripe payment disputed")
    suspended = await run_cli(active, ["license", "show", str(ana_license)])
    assert ", suspended since " in suspended.output
    assert "(stripe payment disputed)" in suspended.output
    [document] = json.loads(
        (await run_cli(active, ["license", "list", "--email", "ana@example.com", "--json"])).output
    )
    assert document["suspended_reason"] == "stripe payment disputed"
    await licenses_store.restore(db, ana)

    await run_cli(active, ["license", "resend", str(ana_license)])  # no worker: it stays queued
    resent = await run_cli(active, ["license", "show", str(ana_license)])
    assert "resend: queued" in resent.output and "replaced, 0/1 downloads" in resent.output
    listed = await run_cli(active, ["license", "list", "--email", "ana@example.com"])
    assert listed.output.splitlines()[1].split()[-3:-1] == ["queued", "replaced"]

    unknown = await run_cli(active, ["license", "show", "nobody@example.com"])
    assert unknown.exit_code == 1 and "no license for nobody@example.com" in unknown.output
