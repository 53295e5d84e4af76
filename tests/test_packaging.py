"""Customer packages: real files, real zips, real hashes."""

from __future__ import annotations

import hashlib
import json
import os
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
from colmena.domain.packaging import PackagingError
from colmena.gateways.packaging import ARCHIVES_DIRNAME, build_package

ISSUED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def product_dir(tmp_path: Path) -> Path:
    root = tmp_path / "product"
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


def test_zip_holds_product_and_license_and_hash_matches(tmp_path, product_dir, signed):
    lic, key, public_pem = signed
    storage = tmp_path / "storage"
    package = build_package(
        product_dir, storage, filename="lic_42.zip", license=lic, license_key=key
    )

    assert package.path == storage / "lic_42.zip"
    data = package.path.read_bytes()
    assert package.sha256 == hashlib.sha256(data).hexdigest()
    assert package.size == len(data)
    assert [p.name for p in storage.iterdir()] == ["lic_42.zip"]  # no temp file left behind

    with zipfile.ZipFile(package.path) as archive:
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


def test_same_inputs_give_the_same_bytes(tmp_path, product_dir, signed):
    lic, key, _ = signed
    first = build_package(
        product_dir, tmp_path / "a", filename="p.zip", license=lic, license_key=key
    )
    second = build_package(
        product_dir, tmp_path / "b", filename="p.zip", license=lic, license_key=key
    )
    assert first.sha256 == second.sha256


def test_rebuild_replaces_the_file_in_place(tmp_path, product_dir, signed):
    lic, key, _ = signed
    storage = tmp_path / "storage"
    build_package(product_dir, storage, filename="p.zip", license=lic, license_key=key)
    (product_dir / "README.txt").write_text("changed\n")
    package = build_package(product_dir, storage, filename="p.zip", license=lic, license_key=key)
    with zipfile.ZipFile(package.path) as archive:
        assert archive.read("README.txt") == b"changed\n"
    assert hashlib.sha256(package.path.read_bytes()).hexdigest() == package.sha256


@pytest.mark.parametrize("filename", ["../escape.zip", "sub/p.zip", "p.tar", ".hidden.zip"])
def test_unsafe_filenames_are_refused(tmp_path, product_dir, signed, filename):
    lic, key, _ = signed
    with pytest.raises(PackagingError):
        build_package(product_dir, tmp_path / "s", filename=filename, license=lic, license_key=key)


def test_symlink_in_product_is_refused_and_nothing_is_written(tmp_path, product_dir, signed):
    lic, key, _ = signed
    secret = tmp_path / "secret.txt"
    secret.write_text("do not ship")
    (product_dir / "docs" / "link.txt").symlink_to(secret)
    storage = tmp_path / "storage"
    with pytest.raises(PackagingError):
        build_package(product_dir, storage, filename="p.zip", license=lic, license_key=key)
    assert not storage.exists() or not any(storage.iterdir())


def test_missing_or_empty_product_dir_is_refused(tmp_path, signed):
    lic, key, _ = signed
    (tmp_path / "empty").mkdir()
    for product in (tmp_path / "nope", tmp_path / "empty"):
        with pytest.raises(PackagingError):
            build_package(product, tmp_path / "s", filename="p.zip", license=lic, license_key=key)


def test_product_may_not_shadow_the_license_files(tmp_path, product_dir, signed):
    lic, key, _ = signed
    (product_dir / "license.key").write_text("fake")
    with pytest.raises(PackagingError):
        build_package(product_dir, tmp_path / "s", filename="p.zip", license=lic, license_key=key)


def test_the_product_is_compressed_once_per_version(tmp_path, product_dir, signed):
    lic, key, _ = signed
    storage = tmp_path / "storage"
    archives = storage / ARCHIVES_DIRNAME
    build_package(product_dir, storage / "one", filename="p.zip", license=lic, license_key=key)
    [archive] = archives.iterdir()
    built = archive.stat()
    second = build_package(
        product_dir, storage / "two", filename="p.zip", license=lic, license_key=key
    )
    assert list(archives.iterdir()) == [archive]
    assert (archive.stat().st_ino, archive.stat().st_mtime_ns) == (built.st_ino, built.st_mtime_ns)
    with zipfile.ZipFile(second.path) as package:
        assert package.read("docs/manual.pdf") == (product_dir / "docs/manual.pdf").read_bytes()
        assert package.read("license.key").decode().strip() == key.strip()

    (product_dir / "README.txt").write_text("Colmena Industrial 2\n")
    third = build_package(
        product_dir, storage / "three", filename="p.zip", license=lic, license_key=key
    )
    [replacement] = archives.iterdir()
    assert replacement != archive, "a new version of the product, a new archive; the old one goes"
    with zipfile.ZipFile(third.path) as package:
        assert package.read("README.txt") == b"Colmena Industrial 2\n"
