"""Customer packages: real files, real zips, real hashes; assembled, never written."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from colmena.domain.licensing import (
    License,
    generate_key_pair,
    load_private_key,
    load_public_key,
    sign_license,
    verify_license_key,
)
from colmena.domain.packaging import PackagingError, license_members, package_filename
from colmena.gateways.packaging import SMALL_PRODUCT_FILES, Package, Packager

ISSUED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


PRODUCT = "colmena-industrial"


@pytest.fixture
def product_dir(tmp_path: Path) -> Path:
    root = tmp_path / "products" / PRODUCT
    (root / "bin").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "README.txt").write_text("Colmena Industrial\n")
    (root / "bin" / "colmena-agent").write_bytes(b"#!/bin/sh\necho agent\n")
    (root / "bin" / "colmena-agent").chmod(0o755)
    (root / "docs" / "manual.pdf").write_bytes(os.urandom(300_000))
    return root


@pytest.fixture(scope="module")
def signed():
    pair = generate_key_pair()
    lic = License(
        license_id="lic_42",
        product="Colmena Industrial",
        edition="industrial",
        customer_email="ana@example.com",
        seats=3,
        issued_at=ISSUED,
        expires_at=ISSUED + timedelta(days=30),
        entitlements=("stamping",),
    )
    return lic, sign_license(lic, load_private_key(pair.private_pem)), pair.public_pem


def packager(tmp_path: Path, host: str = "host-a") -> Packager:
    return Packager(tmp_path / "products", tmp_path / host / "archives")


def package_bytes(package: Package) -> bytes:
    chunks, offset = [], 0
    while chunk := package.read_at(offset, 100_000):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def assembled(packer: Packager, lic: License, key: str) -> tuple[Package, bytes]:
    with packer.assemble(PRODUCT, lic, key) as package:
        return package, package_bytes(package)


def test_zip_holds_product_and_license_and_hash_matches(tmp_path, product_dir, signed):
    lic, key, public_pem = signed
    package, data = assembled(packager(tmp_path), lic, key)

    assert package.sha256 == hashlib.sha256(data).hexdigest()
    assert package.size == len(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert names == [
            "README.txt",
            "bin/colmena-agent",
            "docs/manual.pdf",
            "license.key",
            "license.json",
        ]
        assert archive.read("docs/manual.pdf") == (product_dir / "docs" / "manual.pdf").read_bytes()
        assert (archive.getinfo("bin/colmena-agent").external_attr >> 16) & 0o111
        embedded_key = archive.read("license.key").decode().strip()
        assert verify_license_key(embedded_key, load_public_key(public_pem)) == lic
        assert json.loads(archive.read("license.json"))["license_id"] == "lic_42"
        assert archive.getinfo("license.key").date_time == (2025, 3, 1, 12, 0, 0)


def test_the_tail_is_what_appending_to_a_copy_of_the_archive_writes(tmp_path, product_dir, signed):
    """The zip is the archive's first bytes plus a tail computed in memory: exactly the file
    that zipfile's own append mode makes from a copy of the archive."""
    lic, key, _ = signed
    packer = packager(tmp_path)
    package, data = assembled(packer, lic, key)
    [archive] = packer.archives_dir.iterdir()
    copy = tmp_path / "copy.zip"
    shutil.copyfile(archive, copy)
    with zipfile.ZipFile(copy, "a") as appended:
        for name, content in license_members(lic, key):
            info = zipfile.ZipInfo(name, date_time=(2025, 3, 1, 12, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            appended.writestr(info, content)
    assert copy.read_bytes() == data
    assert data[: package.cut] == archive.read_bytes()[: package.cut]


def member(data: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read(name)


def test_two_hosts_assemble_the_same_bytes_from_their_own_archive_caches(
    tmp_path, product_dir, signed
):
    lic, key, _ = signed
    first, first_bytes = assembled(packager(tmp_path, "host-a"), lic, key)
    second, second_bytes = assembled(packager(tmp_path, "host-b"), lic, key)
    assert first.sha256 == second.sha256 and first_bytes == second_bytes
    for host in ("host-a", "host-b"):  # each built its own archive, and wrote nothing else
        [archive] = (tmp_path / host / "archives").iterdir()
        assert archive.name.startswith(f"{PRODUCT}-") and archive.suffix == ".zip"
        assert [p.name for p in (tmp_path / host).iterdir()] == ["archives"]


def test_the_digest_is_the_assembled_packages_and_another_license_gives_another(
    tmp_path, product_dir, signed
):
    lic, key, _ = signed
    packer = packager(tmp_path)
    package, data = assembled(packer, lic, key)
    assert packer.digest(PRODUCT, lic, key) == (package.sha256, len(data))
    other = dataclasses.replace(lic, license_id="lic_43")
    assert packer.digest(PRODUCT, other, key)[0] != package.sha256


def test_digest_now_gives_the_digest_once_the_archive_is_built_and_read(
    tmp_path, product_dir, signed
):
    lic, key, _ = signed
    packer = packager(tmp_path)
    assert packer.digest_now(PRODUCT, lic, key) is None  # not built: that takes a thread
    assert not packer.archives_dir.exists()  # nor did it build one on the event loop

    expected = packer.digest(PRODUCT, lic, key)
    other = dataclasses.replace(lic, license_id="lic_45")

    assert packer.digest_now(PRODUCT, lic, key) == expected
    assert packer.digest_now(PRODUCT, other, key) == packer.digest(PRODUCT, other, key)
    # Another process (another packager) has not read the archive yet: a thread's work.
    assert packager(tmp_path).digest_now(PRODUCT, lic, key) is None


def test_digest_now_leaves_a_changed_or_large_product_to_a_thread(tmp_path, product_dir, signed):
    lic, key, _ = signed
    packer = packager(tmp_path)
    packer.digest(PRODUCT, lic, key)
    (product_dir / "README.txt").write_text("version 2\n")
    assert packer.digest_now(PRODUCT, lic, key) is None  # version 2 is not built yet
    new = packer.digest(PRODUCT, lic, key)
    assert packer.digest_now(PRODUCT, lic, key) == new

    for index in range(SMALL_PRODUCT_FILES):
        (product_dir / "docs" / f"page-{index}.txt").write_text(f"page {index}\n")
    large = packer.digest(PRODUCT, lic, key)
    assert packer.digest_now(PRODUCT, lic, key) is None
    assert large != new


def test_a_changed_product_gives_new_bytes_and_a_new_archive(tmp_path, product_dir, signed):
    lic, key, _ = signed
    packer = packager(tmp_path)
    before, _ = assembled(packer, lic, key)
    [archive] = packer.archives_dir.iterdir()
    (product_dir / "README.txt").write_text("changed\n")
    after, data = assembled(packer, lic, key)
    assert after.sha256 != before.sha256
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        assert package.read("README.txt") == b"changed\n"
    [replacement] = packer.archives_dir.iterdir()
    assert replacement != archive, "a new version of the product, a new archive; the old one goes"
    assert hashlib.sha256(data).hexdigest() == after.sha256


def test_a_package_keeps_its_bytes_while_the_product_is_replaced(tmp_path, product_dir, signed):
    """The archive is opened before the package is assembled: a newer version replacing it
    mid-download does not change what the open package sends."""
    lic, key, _ = signed
    packer = packager(tmp_path)
    with packer.assemble(PRODUCT, lic, key) as package:
        (product_dir / "README.txt").write_text("version 2\n")
        packer.digest(PRODUCT, lic, key)  # builds the new archive, removing the old file
        data = package_bytes(package)
    assert hashlib.sha256(data).hexdigest() == package.sha256


def test_the_product_is_compressed_once_per_version(tmp_path, product_dir, signed):
    lic, key, _ = signed
    packer = packager(tmp_path)
    assembled(packer, lic, key)
    [archive] = packer.archives_dir.iterdir()
    built = archive.stat()
    second, data = assembled(packer, dataclasses.replace(lic, license_id="lic_44"), key)
    assert list(packer.archives_dir.iterdir()) == [archive]
    assert (archive.stat().st_ino, archive.stat().st_mtime_ns) == (built.st_ino, built.st_mtime_ns)
    assert member(data, "docs/manual.pdf") == (product_dir / "docs/manual.pdf").read_bytes()
    assert member(data, "license.key").decode().strip() == key.strip()


@pytest.mark.parametrize("product_ref", ["../escape", "sub/p", ".hidden"])
def test_unsafe_filenames_are_refused(product_ref):
    with pytest.raises(PackagingError):
        package_filename(product_ref)


def test_the_filename_is_the_product_ref():
    assert package_filename(PRODUCT) == f"{PRODUCT}.zip"


def test_symlink_in_product_is_refused_and_nothing_is_written(tmp_path, product_dir, signed):
    lic, key, _ = signed
    secret = tmp_path / "secret.txt"
    secret.write_text("do not ship")
    (product_dir / "docs" / "link.txt").symlink_to(secret)
    packer = packager(tmp_path)
    with pytest.raises(PackagingError):
        packer.assemble(PRODUCT, lic, key)
    assert not packer.archives_dir.exists() or not any(packer.archives_dir.iterdir())


def test_missing_or_empty_product_dir_is_refused(tmp_path, signed):
    lic, key, _ = signed
    (tmp_path / "products" / "empty").mkdir(parents=True)
    packer = packager(tmp_path)
    for product in ("nope", "empty"):
        with pytest.raises(PackagingError):
            packer.assemble(product, lic, key)


def test_product_may_not_shadow_the_license_files(tmp_path, product_dir, signed):
    lic, key, _ = signed
    (product_dir / "license.key").write_text("fake")
    with pytest.raises(PackagingError):
        packager(tmp_path).assemble(PRODUCT, lic, key)
