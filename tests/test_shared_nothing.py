"""Hosts that share no writable directory: a license emailed by a worker on one host is
downloaded from an ingress on another, each with its own data directory and nothing copied
between them; only the read-only product directory (deployment data) is the same."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from colmena.domain.licensing import load_public_key, verify_license_key
from tests.conftest import wait_for
from tests.licenses_support import (
    PRODUCT,
    SIGNING_KEY,
    insert_payment,
    license_settings,
    token_in,
    zip_members,
)
from tests.standins.smtp import SmtpStandin


@pytest.fixture
def smtp() -> Iterator[SmtpStandin]:
    with SmtpStandin() as server:
        yield server


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_a_license_emailed_on_host_a_downloads_from_an_ingress_on_host_b(
    settings, smtp, tmp_path, db, start_worker, make_client
) -> None:
    host_a = license_settings(settings, smtp, tmp_path, data_dir=tmp_path / "host-a")
    # The ingress holds only the public key, and its own (empty) data directory.
    host_b = host_a.model_copy(
        update={
            "data_dir": tmp_path / "host-b",
            "license_signing_key": None,
            "license_public_key": SIGNING_KEY.public_pem,
        }
    )
    payment_id = await insert_payment(db)
    system = start_worker(settings_override=host_a)
    system.broker.get_actor("deliver_license").send(payment_id)
    [mail] = await smtp.wait_for_async(1)
    await wait_for(lambda: db.fetchval("SELECT sent_at IS NOT NULL FROM license_emails"))
    license = await db.fetchrow("SELECT id, package_sha256, package_size FROM licenses")
    assert not (tmp_path / "host-b").exists()
    written_by_a = files_under(tmp_path / "host-a")
    assert [name.split("/")[0] for name in written_by_a] == ["product-archives"]

    client = await make_client(host_b)
    download = await client.post(f"/downloads/{token_in(mail)}")
    assert download.status == 200, await download.text()
    body = await download.read()
    assert hashlib.sha256(body).hexdigest() == license["package_sha256"]
    assert len(body) == license["package_size"]
    members = zip_members(body)
    assert set(members) == {"README.txt", "bin/colmena-bot", "license.key", "license.json"}
    proved = verify_license_key(
        members["license.key"].decode(), load_public_key(SIGNING_KEY.public_pem)
    )
    assert proved.license_id == str(license["id"]) and proved.product == PRODUCT

    # Host B built its own archive cache; host A's directory is as the worker left it.
    assert [name.split("/")[0] for name in files_under(tmp_path / "host-b")] == ["product-archives"]
    assert files_under(tmp_path / "host-a") == written_by_a
    assert (await client.post(f"/downloads/{token_in(mail)}")).status == 410  # still single-use
