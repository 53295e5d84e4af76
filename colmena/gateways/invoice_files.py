"""The accountant's copies of stamped invoices, when COLMENA_CFDI_STORAGE_DIR asks for them:
``<storage>/<issuer RFC>/<YYYY>/<MM>/<folio>_<UUID>.xml|.pdf``.

An export, never a source: the database row holds the stamped XML and the rendered PDF, and
nothing reads these files back. Each worker writes the invoices it handles into its own
directory (hosts share none). Files are written atomically (temporary file, then rename), so a
reader never sees half an invoice, and only when missing: their content is fixed by the row.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class InvoiceFiles:
    xml: Path

    @property
    def pdf(self) -> Path:
        return self.xml.with_suffix(".pdf")


def invoice_files(
    storage: Path, *, issuer_rfc: str, label: str, uuid: str, stamped_at: dt.datetime
) -> InvoiceFiles:
    return InvoiceFiles(
        Path(storage, issuer_rfc, f"{stamped_at:%Y}", f"{stamped_at:%m}", f"{label}_{uuid}.xml")
    )


def write_atomically(path: Path, content: bytes) -> Path:
    """Write ``content`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def export_missing(files: InvoiceFiles, *, xml: bytes, pdf: bytes) -> None:
    """Blocking: write whichever of the two files this host lacks."""
    for path, content in ((files.xml, xml), (files.pdf, pdf)):
        if not path.exists():
            write_atomically(path, content)
