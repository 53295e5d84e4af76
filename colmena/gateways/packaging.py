"""The customer's download on disk: the product directory plus their license, as one zip.

What goes in is `colmena.domain.packaging`'s rule; this module reads the product files and
writes the zip. The zip is byte-for-byte reproducible from its inputs (sorted members,
timestamps taken from the license, fixed permissions), so a rebuild after a crash yields the
same SHA-256 as the one already recorded. It is written to a temporary file and renamed into
place, so a reader never sees half a package.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import structlog

from colmena.domain.licensing import License
from colmena.domain.packaging import (
    PackagingError,
    check_filename,
    check_product_members,
    license_members,
    member_time,
)

log = structlog.get_logger(__name__)

_CHUNK = 1024 * 1024


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
    check_filename(filename)
    product_dir = Path(product_dir)
    if not product_dir.is_dir():
        raise PackagingError(f"product directory {product_dir} does not exist")
    sources = _product_files(product_dir)
    names = check_product_members(sources, product=str(product_dir))

    storage_dir = Path(storage_dir)
    storage_dir.mkdir(parents=True, exist_ok=True)
    final_path = storage_dir / filename
    date_time = member_time(license)
    fd, tmp_name = tempfile.mkstemp(dir=storage_dir, prefix=f".{filename}.", suffix=".part")
    tmp_path = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            with zipfile.ZipFile(raw, "w") as archive:
                for arcname in names:
                    source = sources[arcname]
                    executable = bool(source.stat().st_mode & 0o111)
                    info = _member_info(arcname, date_time, executable=executable)
                    with source.open("rb") as src, archive.open(info, "w") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
                for arcname, content in license_members(license, license_key):
                    archive.writestr(_member_info(arcname, date_time), content)
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
        files=len(names) + 2,
    )
    return Package(path=final_path, sha256=sha256, size=size)


def _product_files(product_dir: Path) -> dict[str, Path]:
    """Every file under ``product_dir`` by its member name; a symbolic link is refused."""
    files: dict[str, Path] = {}
    for root, dirs, names in os.walk(product_dir, followlinks=False):
        for name in dirs + names:
            path = Path(root, name)
            if path.is_symlink():
                raise PackagingError(f"refusing symbolic link in product directory: {path}")
        for name in names:
            path = Path(root, name)
            files[path.relative_to(product_dir).as_posix()] = path
    return files


def _member_info(
    arcname: str, date_time: tuple[int, int, int, int, int, int], *, executable: bool = False
) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(arcname, date_time=date_time)
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
