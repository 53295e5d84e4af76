"""The customer's download: the product directory plus their license, as one zip, assembled
wherever it is asked for.

What goes in is `colmena.domain.packaging`'s rule; this module reads the product files and
makes the zip. The product's members are compressed once per version of the product directory
into a product archive, kept in a directory local to this host (a cache: any host rebuilds it
from the read-only product directory). A license's package is that archive with the license's
two members appended, and is never written anywhere: appending to a zip rewrites only what
follows the archive's last member (the license members, then the central directory), so a
package is the archive's first ``cut`` bytes followed by a small ``tail`` computed in memory.

Both are byte-for-byte reproducible from their inputs (sorted members, product members stamped
with their files' modification times, license members with the license's issue time, fixed
permissions): the worker that emails a link records the package's SHA-256 and size, and the
ingress that serves the link on another host assembles the same bytes, which it checks against
that record before it spends the link. Hosts must therefore hold the same product directory,
modification times and modes included (an image layer, ``rsync -a`` or ``tar`` keep them).
"""

from __future__ import annotations

import calendar
import hashlib
import os
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from colmena.config import Settings
from colmena.config.shared_client import SharedClient
from colmena.domain.licensing import License
from colmena.domain.packaging import (
    PackagingError,
    check_product_members,
    license_members,
    member_time,
)

log = structlog.get_logger(__name__)

_CHUNK = 1024 * 1024
ZIP_EPOCH = calendar.timegm((1980, 1, 1, 0, 0, 0))
# Prefix digests kept per process: one per product version in use, so a handful.
_DIGESTS_KEPT = 64
# A product of at most this many files is listed on the event loop (`Packager.digest_now`).
SMALL_PRODUCT_FILES = 64


@dataclass(frozen=True, eq=False)
class Package:
    """One license's package, ready to send: ``archive`` (open) up to ``cut``, then ``tail``.

    The archive is opened before the package is assembled, so a newer version of the product
    replacing it meanwhile cannot change the bytes this package names. Close it when done.
    """

    archive: BinaryIO
    cut: int
    tail: bytes
    sha256: str

    @property
    def size(self) -> int:
        return self.cut + len(self.tail)

    def read_at(self, offset: int, limit: int) -> bytes:
        """Blocking: up to ``limit`` bytes of the package from ``offset`` (b"" at the end)."""
        if offset < self.cut:
            data = os.pread(self.archive.fileno(), min(limit, self.cut - offset), offset)
            if not data:
                raise PackagingError(f"product archive {self.archive.name} was truncated")
            return data
        start = offset - self.cut
        return self.tail[start : start + limit]

    def close(self) -> None:
        self.archive.close()

    def __enter__(self) -> Package:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass(eq=False)
class Packager:
    """Assembles packages from ``products_dir/<product_ref>``, caching the product archives in
    ``archives_dir`` (this host's own) and each archive's prefix digest in memory."""

    products_dir: Path
    archives_dir: Path
    _digests: dict[tuple[int, int, int], Any] = field(default_factory=dict, init=False, repr=False)
    # Files per product at its last listing, which tells `digest_now` whether to list it again.
    _files: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def assemble(self, product_ref: str, license: License, license_key: str) -> Package:
        """Blocking: the package of ``license`` for ``product_ref``, with its SHA-256.

        Symbolic links in the product are refused rather than followed: one pointing outside
        the product directory would ship that file to a customer.
        """
        listing = product_archive(self.products_dir / product_ref, self.archives_dir)
        self._files[product_ref] = len(listing.stats)
        archive = listing.archive.open("rb")
        try:
            cut, tail = _append_license(archive, license, license_key)
            digest = self._prefix_digest(archive, cut)
            digest.update(tail)
            return Package(archive=archive, cut=cut, tail=tail, sha256=digest.hexdigest())
        except BaseException:
            archive.close()
            raise

    def digest(self, product_ref: str, license: License, license_key: str) -> tuple[str, int]:
        """Blocking: (SHA-256, size) of the package, which is not kept."""
        with self.assemble(product_ref, license, license_key) as package:
            return package.sha256, package.size

    def digest_now(
        self, product_ref: str, license: License, license_key: str
    ) -> tuple[str, int] | None:
        """`digest`, when it is quick enough for the event loop: the product small when last
        listed (at most SMALL_PRODUCT_FILES files, so listing it again is a few stat calls),
        its archive of this version built and its prefix digest already known to this process.
        What is left is two small members compressed and hashed, cheaper than the hop to a
        thread that `digest` needs. None otherwise: then call `digest` in a thread."""
        if self._files.get(product_ref, SMALL_PRODUCT_FILES + 1) > SMALL_PRODUCT_FILES:
            return None
        listing = _listing(self.products_dir / product_ref, self.archives_dir)
        self._files[product_ref] = len(listing.stats)
        if len(listing.stats) > SMALL_PRODUCT_FILES or not listing.archive.is_file():
            return None
        with listing.archive.open("rb") as archive:
            cut, tail = _append_license(archive, license, license_key)
            digest = self._known_prefix_digest(archive, cut)
            if digest is None:
                return None
            digest.update(tail)
            return digest.hexdigest(), cut + len(tail)

    def _known_prefix_digest(self, archive: BinaryIO, cut: int) -> Any | None:
        """A copy of the SHA-256 fed the archive's first ``cut`` bytes, if this process has
        read them before (the caller may feed it more)."""
        st = os.fstat(archive.fileno())
        with self._lock:
            known = self._digests.get((st.st_dev, st.st_ino, cut))
        return None if known is None else known.copy()

    def _prefix_digest(self, archive: BinaryIO, cut: int) -> Any:
        """A SHA-256 already fed the archive's first ``cut`` bytes (a copy: the caller may feed
        it more), read once per archive file and process."""
        known = self._known_prefix_digest(archive, cut)
        if known is not None:
            return known
        st = os.fstat(archive.fileno())
        read = hashlib.sha256()
        offset = 0
        while offset < cut:
            chunk = os.pread(archive.fileno(), min(_CHUNK, cut - offset), offset)
            if not chunk:
                raise PackagingError(f"product archive {archive.name} was truncated")
            read.update(chunk)
            offset += len(chunk)
        with self._lock:
            if len(self._digests) >= _DIGESTS_KEPT:
                self._digests.clear()
            self._digests[(st.st_dev, st.st_ino, cut)] = read
        return read.copy()


def packager_for(settings: Settings) -> Packager:
    return Packager(settings.license_products_path, settings.license_archive_path)


# The process's packager: workers digest packages with it, the ingress assembles them.
PACKAGER: SharedClient[Packager] = SharedClient("packager", packager_for)


class _AppendOverlay:
    """The product archive as a file for `zipfile`'s append mode, where every write (all of
    them past the archive's last member) lands in memory instead: the archive stays untouched
    and its new ending is ``tail``, from ``cut`` on."""

    def __init__(self, archive: BinaryIO) -> None:
        self._fd = archive.fileno()
        self._size = os.fstat(self._fd).st_size
        self._pos = 0
        self.cut: int | None = None
        self.tail = bytearray()

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        end = self._size if self.cut is None else self.cut + len(self.tail)
        self._pos = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: end}[whence] + offset
        return self._pos

    def read(self, size: int = -1) -> bytes:
        if self.cut is not None:
            raise PackagingError("zip append read back what it wrote")
        size = self._size - self._pos if size < 0 else size
        data = os.pread(self._fd, size, self._pos)
        self._pos += len(data)
        return data

    def write(self, data: bytes) -> int:
        if self.cut is None:
            self.cut = self._pos
        start = self._pos - self.cut
        if start < 0 or start > len(self.tail):
            raise PackagingError("zip append wrote outside the archive's ending")
        self.tail[start : start + len(data)] = data
        self._pos += len(data)
        return len(data)

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if self.cut is not None:
            del self.tail[size - self.cut :]
        return size

    def flush(self) -> None:
        """Nothing is buffered."""


def _append_license(archive: BinaryIO, license: License, license_key: str) -> tuple[int, bytes]:
    """(cut, tail): the archive with the license's members appended is its first ``cut`` bytes
    followed by ``tail``."""
    overlay = _AppendOverlay(archive)
    date_time = member_time(license)
    with zipfile.ZipFile(overlay, "a") as package:
        for arcname, content in license_members(license, license_key):
            package.writestr(_member_info(arcname, date_time), content)
    if overlay.cut is None:
        raise PackagingError("appending the license to the product archive wrote nothing")
    return overlay.cut, bytes(overlay.tail)


@dataclass(frozen=True)
class _Listing:
    """A product directory as it is now, and where its archive of this version lives."""

    sources: dict[str, Path]
    stats: dict[str, os.stat_result]
    archive: Path


def _listing(product_dir: Path, archives_dir: Path) -> _Listing:
    """The product's members and the path of their archive, named by a digest of every file's
    name, size, times and mode: an operator replacing a file gives a new archive."""
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
    return _Listing(sources, stats, archives_dir / f"{product_dir.name}-{version}.zip")


def product_archive(product_dir: Path, archives_dir: Path) -> _Listing:
    """The product's members compressed, built once per version of the directory (the older
    archives of the product are then removed)."""
    listing = _listing(product_dir, archives_dir)
    path = listing.archive
    if path.is_file():
        return listing
    archives_dir.mkdir(parents=True, exist_ok=True)
    stats = listing.stats

    def compress(raw: BinaryIO) -> None:
        with zipfile.ZipFile(raw, "w") as archive:
            for arcname in stats:
                info = _member_info(
                    arcname,
                    _zip_time(stats[arcname].st_mtime),
                    executable=bool(stats[arcname].st_mode & 0o111),
                )
                with listing.sources[arcname].open("rb") as src, archive.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)

    _write_atomically(path, compress)
    prefix = f"{product_dir.name}-"
    for older in archives_dir.glob(f"{prefix}*.zip"):
        if older != path and len(older.name) == len(path.name):
            older.unlink(missing_ok=True)
    log.info("product_archive_built", product=product_dir.name, files=len(stats))
    return listing


def _write_atomically(final_path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`write` into a temporary file beside `final_path`, flushed to disk, then renamed over it
    (and the rename made durable too), so a reader never sees half an archive."""
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


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable, not only the file's bytes."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
