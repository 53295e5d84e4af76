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

from colmena.gateways.cfdi import render_pdf


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


def file_invoice(files: InvoiceFiles, stamped_xml: bytes) -> bytes:
    """Blocking: the XML file (rewritten if missing) and the PDF (rendered once, ~0.7 s of
    CPU, then read back); returns the PDF."""
    if not files.xml.exists():
        write_atomically(files.xml, stamped_xml)
    if files.pdf.exists():
        return files.pdf.read_bytes()
    pdf = render_pdf(stamped_xml)
    write_atomically(files.pdf, pdf)
    return pdf
