"""The customer's download on disk: the product directory plus their license, as one zip.

What goes in is `colmena.domain.packaging`'s rule; this module reads the product files and
writes the zip. The product's members are compressed once per version of the product
directory into a product archive (beside the packages, under `.product-archives`); each
license's package is a copy of that archive with the license's two members appended, so a
license costs a file copy, not a recompression of the product. Both are byte-for-byte
reproducible from their inputs (sorted members, product members stamped with their files'
modification times, license members with the license's issue time, fixed permissions), so a
rebuild after a crash yields the same SHA-256 as the one already recorded. Each is written to
a temporary file and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import calendar
import hashlib
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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
ZIP_EPOCH = calendar.timegm((1980, 1, 1, 0, 0, 0))


@dataclass(frozen=True)
class Package:
    path: Path
    sha256: str
    size: int


ARCHIVES_DIRNAME = ".product-archives"


def build_package(
    product_dir: Path,
    storage_dir: Path,
    *,
    filename: str,
    license: License,
    license_key: str,
) -> Package:
    """Zip ``product_dir`` with ``license.key`` and ``license.json`` at the root, into
    ``storage_dir``; the product archive is kept in ``storage_dir``'s parent.

    Symbolic links are refused rather than followed: one pointing outside the product
    directory would ship that file to a customer.
    """
    check_filename(filename)
    product_dir = Path(product_dir)
    storage_dir = Path(storage_dir)
    base = product_archive(product_dir, storage_dir.parent / ARCHIVES_DIRNAME)
    storage_dir.mkdir(parents=True, exist_ok=True)
    final_path = storage_dir / filename
    date_time = member_time(license)

    def append_license(raw: BinaryIO) -> None:
        with base.open("rb") as src:
            shutil.copyfileobj(src, raw, _CHUNK)
        raw.seek(0)
        with zipfile.ZipFile(raw, "a") as archive:
            for arcname, content in license_members(license, license_key):
                archive.writestr(_member_info(arcname, date_time), content)

    _write_atomically(final_path, append_license)
    sha256, size = _digest(final_path)
    log.info(
        "package_built",
        license_id=license.license_id,
        path=str(final_path),
        sha256=sha256,
        size=size,
    )
    return Package(path=final_path, sha256=sha256, size=size)


def product_archive(product_dir: Path, archives_dir: Path) -> Path:
    """The product's members compressed, built once per version of the directory.

    The version is a digest of every file's name, size, times and mode: an operator replacing
    a file gives a new archive (the older ones of the product are then removed).
    """
    if not product_dir.is_dir():
        raise PackagingError(f"product directory {product_dir} does not exist")
    sources = _product_files(product_dir)
    names = check_product_members(sources, product=str(product_dir))
    stats = {name: sources[name].stat() for name in names}
    listing = [
        (name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
        for name, st in sorted(stats.items())
    ]
    version = hashlib.sha256(repr(listing).encode()).hexdigest()[:20]
    prefix = f"{product_dir.name}-"
    path = archives_dir / f"{prefix}{version}.zip"
    if path.is_file():
        return path
    archives_dir.mkdir(parents=True, exist_ok=True)

    def compress(raw: BinaryIO) -> None:
        with zipfile.ZipFile(raw, "w") as archive:
            for arcname in names:
                info = _member_info(
                    arcname,
                    _zip_time(stats[arcname].st_mtime),
                    executable=bool(stats[arcname].st_mode & 0o111),
                )
                with sources[arcname].open("rb") as src, archive.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)

    _write_atomically(path, compress)
    for older in archives_dir.glob(f"{prefix}*.zip"):
        if older != path and len(older.name) == len(path.name):
            older.unlink(missing_ok=True)
    log.info("product_archive_built", product=product_dir.name, files=len(names))
    return path


def _write_atomically(final_path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`write` into a temporary file beside `final_path`, flushed to disk, then renamed over it
    (and the rename made durable too)."""
    fd, tmp_name = tempfile.mkstemp(
        dir=final_path.parent, prefix=f".{final_path.name}.", suffix=".part"
    )
    tmp_path = Path(tmp_name)
    try:
        with os.fdopen(fd, "w+b") as raw:
            write(raw)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp_path, final_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(final_path.parent)


def _zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    """A file's modification time as a zip member time (UTC; zip cannot go before 1980)."""
    stamp = time.gmtime(max(mtime, ZIP_EPOCH))
    return (stamp.tm_year, stamp.tm_mon, stamp.tm_mday, stamp.tm_hour, stamp.tm_min, stamp.tm_sec)


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
