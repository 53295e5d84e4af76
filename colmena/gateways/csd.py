"""The issuer's CSD files: read for a report, and loaded once per process to seal invoices.

An operator renews the CSD by replacing its two files; the process's signer (`CSD_SIGNER`)
notices the change on its next use and loads them again, without a restart.
"""

from __future__ import annotations

import os
import threading

from satcfdi.models import Signer

from colmena.config import Settings
from colmena.config.shared_client import SharedClient
from colmena.gateways.cfdi import CsdInfo, CsdInvalid, inspect_csd, load_signer
from colmena.gateways.stamping_config import CsdSource, csd_source

# (inode, size, mtime) of the certificate and of the key: what a replacement changes.
_FilesVersion = tuple[tuple[int, int, int], ...]


def read_csd_certificate(source: CsdSource) -> CsdInfo:
    """What `check-csd` and the expiry job report; CsdError when the file is unusable."""
    try:
        return inspect_csd(source.certificate.read_bytes())
    except OSError as exc:
        raise CsdInvalid(f"cannot read {source.certificate}: {exc.strerror}") from None


def load_csd_signer(source: CsdSource) -> Signer:
    """Read and load the CSD now; CsdError when the files are unreadable or do not load."""
    try:
        certificate, key = source.certificate.read_bytes(), source.key.read_bytes()
    except OSError as exc:
        raise CsdInvalid(f"cannot read the CSD files: {exc.strerror} ({exc.filename})") from None
    return load_signer(certificate, key, source.password)


class CsdSigner:
    """The loaded CSD, loaded on first use and again whenever either file has changed.

    Each use costs two `stat` calls; the key is decrypted only when the files change. Blocking
    (file reads, key decryption): async code calls `signer()` from a thread.
    """

    def __init__(self, source: CsdSource) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._loaded: tuple[_FilesVersion, Signer] | None = None

    def signer(self) -> Signer:
        version = self._files_version()
        with self._lock:
            if self._loaded is None or self._loaded[0] != version:
                self._loaded = (version, load_csd_signer(self.source))
            return self._loaded[1]

    def _files_version(self) -> _FilesVersion:
        try:
            stats = [os.stat(path) for path in (self.source.certificate, self.source.key)]
        except OSError as exc:
            raise CsdInvalid(
                f"cannot read the CSD files: {exc.strerror} ({exc.filename})"
            ) from None
        return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


def csd_signer(settings: Settings) -> CsdSigner:
    """The signer for the configured CSD; its files are first read when it is first used."""
    return CsdSigner(csd_source(settings))


CSD_SIGNER: SharedClient[CsdSigner] = SharedClient("csd-signer", csd_signer)
