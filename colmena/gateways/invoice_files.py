"""Stamped invoices on disk: ``<storage>/<issuer RFC>/<YYYY>/<MM>/<folio>_<UUID>.xml|.pdf``.

Files are written atomically (temporary file, then rename), so a reader never sees half an
invoice, and each is written again when this host lacks it: the database row holds the XML,
the files are copies an accountant can pick up.
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
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    os.replace(tmp, path)
    return path


def filed_pdf(files: InvoiceFiles, stamped_xml: bytes) -> bytes | None:
    """Blocking: write the XML file if this host lacks it; the PDF if it was rendered and filed
    before (the render costs ~0.2-0.4 s of CPU, so it is done once), else None."""
    if not files.xml.exists():
        write_atomically(files.xml, stamped_xml)
    return files.pdf.read_bytes() if files.pdf.exists() else None
