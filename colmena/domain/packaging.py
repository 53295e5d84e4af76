"""The customer's download: the product directory plus their license, as one zip.

The zip is byte-for-byte reproducible from its inputs (sorted members, timestamps taken from
the license, fixed permissions), so a rebuild after a crash yields the same SHA-256 as the
one already recorded. It is written to a temporary file and renamed into place, so a reader
never sees half a package.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import structlog

from colmena.domain.licensing import License

log = structlog.get_logger(__name__)

LICENSE_KEY_MEMBER = "license.key"
LICENSE_JSON_MEMBER = "license.json"
_CHUNK = 1024 * 1024


class PackagingError(RuntimeError):
    """The product directory or package name cannot make a safe package."""


@dataclass(frozen=True)
class Package:
    path: Path
    sha256: str
    size: int


def build_package(
    product_dir: Path,
    storage_dir: Path,
    *,
    filename: str,
    license: License,
    license_key: str,
) -> Package:
    """Zip ``product_dir`` with ``license.key`` and ``license.json`` at the root.

    Symbolic links are refused rather than followed: one pointing outside the product
    directory would ship that file to a customer.
    """
    if Path(filename).name != filename or not filename.endswith(".zip") or filename.startswith("."):
        raise PackagingError(f"package filename must be a plain *.zip name, got {filename!r}")
    product_dir = Path(product_dir)
    if not product_dir.is_dir():
        raise PackagingError(f"product directory {product_dir} does not exist")
    members = _product_members(product_dir)
    reserved = {LICENSE_KEY_MEMBER, LICENSE_JSON_MEMBER} & {name for name, _ in members}
    if reserved:
        raise PackagingError(f"product directory already contains {sorted(reserved)}")

    storage_dir = Path(storage_dir)
    storage_dir.mkdir(parents=True, exist_ok=True)
    final_path = storage_dir / filename
    date_time = license.issued_at.timetuple()[:6]
    fd, tmp_name = tempfile.mkstemp(dir=storage_dir, prefix=f".{filename}.", suffix=".part")
    tmp_path = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            with zipfile.ZipFile(raw, "w") as archive:
                for arcname, source in members:
                    executable = bool(source.stat().st_mode & 0o111)
                    info = _member_info(arcname, date_time, executable=executable)
                    with source.open("rb") as src, archive.open(info, "w") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
                archive.writestr(
                    _member_info(LICENSE_KEY_MEMBER, date_time), license_key.strip() + "\n"
                )
                archive.writestr(
                    _member_info(LICENSE_JSON_MEMBER, date_time),
                    json.dumps(license.to_document(), indent=2, sort_keys=True, ensure_ascii=False)
                    + "\n",
                )
            raw.flush()
            os.fsync(raw.fileno())
        sha256, size = _digest(tmp_path)
        os.replace(tmp_path, final_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(storage_dir)
    log.info(
        "package_built",
        license_id=license.license_id,
        path=str(final_path),
        sha256=sha256,
        size=size,
        files=len(members) + 2,
    )
    return Package(path=final_path, sha256=sha256, size=size)


def _product_members(product_dir: Path) -> list[tuple[str, Path]]:
    members: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(product_dir, followlinks=False):
        for name in dirs + files:
            path = Path(root, name)
            if path.is_symlink():
                raise PackagingError(f"refusing symbolic link in product directory: {path}")
        for name in files:
            path = Path(root, name)
            members.append((path.relative_to(product_dir).as_posix(), path))
    if not members:
        raise PackagingError(f"product directory {product_dir} has no files")
    members.sort(key=lambda member: member[0])
    return members


def _member_info(
    arcname: str, date_time: tuple[int, ...], *, executable: bool = False
) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(arcname, date_time=date_time)  # type: ignore[arg-type]
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o100755 if executable else 0o100644) << 16
    return info


def _digest(path: Path) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable, not only the file's bytes."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
