"""CPU cost of issuing a CFDI 4.0 without the PAC: build, seal, schema-check, render the PDF.

Run from the repository root: ``python -m bench.stamping_cpu [invoices]``. Prints invoices
built+sealed+validated per second and where the time goes. The PDF is rendered from a
stamped document (TimbreFiscalDigital added locally, as the stand-in PAC does) because the
long seals and certificate in it dominate the layout cost.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from lxml import etree

from colmena.gateways.cfdi import build_comprobante, load_signer, render_pdf, validate
from tests.standins.csd import make_ca, make_csd, make_sat_certificate
from tests.standins.pac import StandInSW, sample_invoice


def main(count: int) -> None:
    ca = make_ca()
    csd = make_csd(ca)
    signer = load_signer(csd.certificate, csd.key, csd.password)
    sat = make_sat_certificate(ca)
    pac = StandInSW(sat_signer=load_signer(sat.certificate, sat.key, sat.password))
    spent: dict[str, float] = defaultdict(float)

    @contextmanager
    def timed(step: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        spent[step] += time.perf_counter() - started

    def issue(folio: int) -> bytes:
        with timed("build"):
            comprobante = build_comprobante(replace(sample_invoice(), folio=str(folio)))
        with timed("sign"):
            comprobante.sign(signer)
        with timed("validate"):
            root = comprobante.to_xml(include_schema_location=True)
            validate(comprobante, root)
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    issue(0)  # compile the schema and XSLT once, as a long-lived worker would
    spent.clear()
    started = time.perf_counter()
    documents = [issue(n) for n in range(1, count + 1)]
    cpu_path = time.perf_counter() - started

    pdf_count = max(1, min(5, count // 20))  # ~4 s each: keep the run short
    stamped = [pac.issue_stamp(etree.fromstring(xml)).xml.encode() for xml in documents[:pdf_count]]
    with timed("pdf"):
        for xml in stamped:
            render_pdf(xml)

    pdf_per_invoice = spent["pdf"] / pdf_count
    per_invoice = cpu_path / count
    total = per_invoice + pdf_per_invoice
    print(f"{count} invoices built+signed+validated in {cpu_path:.2f}s: {count / cpu_path:.0f}/s")
    print(f"PDF rendering: {1 / pdf_per_invoice:.1f}/s ({pdf_count} rendered)")
    print("share of one invoice's CPU time (incl. PDF):")
    for step, seconds in [
        ("build", spent["build"] / count),
        ("sign", spent["sign"] / count),
        ("validate", spent["validate"] / count),
        ("pdf", pdf_per_invoice),
    ]:
        print(f"  {step:<9}{seconds * 1000:8.2f} ms  {seconds / total:6.1%}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
