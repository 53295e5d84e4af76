"""CFDI 4.0 invoices per second: CPU only, and end to end through the stand-in PAC.

CPU only: build, seal (RSA-SHA256 over the cadena original) and schema-check invoices in one
thread, no PAC, no database; then render a few PDFs from stamped documents (the long seals
and certificate in the TimbreFiscalDigital dominate the layout cost).

End to end: `stamp_invoice` messages on RabbitMQ -> invoice row and folio in PostgreSQL, seal,
validate, stamp by the SW stand-in PAC (aiohttp on 127.0.0.1, in this process: its schema
check, seal verification and TFD signing share the CPU and the GIL with the worker), stamped
XML filed, `deliver_invoice` through the outbox -> PDF rendered in the worker's render
processes (`--pdf-processes`, COLMENA_PDF_PROCESSES) and filed, email with XML and PDF accepted
by an SMTP stand-in. Shares are of the summed actor time (both actors); with several threads the
phases of different messages overlap, so a phase includes waiting ("pdf" is the wait for a
render process; their own CPU is reported apart).

Each end-to-end rate is printed against the first thread count's (the 4-vs-1 ratio with the
default `--threads 1,4`) and against the same run with the PDF rendered in the worker's own
threads, under its GIL, as before the render processes (the baseline, measured first for each
thread count).

    python bench/stamping.py [--invoices 200] [--e2e 40] [--threads 1,4] [--pdf-processes 2]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import dramatiq
from lxml import etree
from pydantic import SecretStr
from satcfdi.create.cfd import cfdi40

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.common import AMQP_URL, delete_queues, figure, machine, scratch_database
from bench.licenses import Clock, timed_actors
from bench.standins.csd import (
    ISSUER_NAME,
    ISSUER_RFC,
    RECEIVER_NAME,
    RECEIVER_RFC,
    CsdFiles,
    make_ca,
    make_csd,
    make_sat_certificate,
)
from bench.standins.pac import StandInSW, sample_invoice
from bench.standins.smtp import SmtpSink
from colmena.config import Settings
from colmena.config.logging import configure_logging
from colmena.gateways import cfdi
from colmena.gateways.cfdi import build_comprobante, load_signer, render_pdf, validate
from colmena.gateways.mail import SmtpMailer
from colmena.gateways.pac import PacGateway
from colmena.gateways.pdf_renderer import PdfRenderer, RenderedPdf
from colmena.runtime.broker import build_broker
from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.resources import Resources
from colmena.store.pool import connect

CPU_STEPS = ("build", "signing", "validation", "pdf")
E2E_PHASES = ("signing", "validation", "pdf", "pac", "smtp", "database")
_DB_METHODS = ("execute", "executemany", "fetch", "fetchrow", "fetchval")
TIMED_ACTORS = ("stamp_invoice", "deliver_invoice")


def cpu_only(count: int, csd: CsdFiles, pac: StandInSW) -> None:
    signer = load_signer(csd.certificate, csd.key, csd.password)
    clock = Clock()

    def issue(folio: int) -> bytes:
        comprobante = clock.wrap_sync("build", build_comprobante)(
            replace(sample_invoice(), folio=str(folio))
        )
        clock.wrap_sync("signing", comprobante.sign)(signer)

        def check() -> etree._Element:
            root = comprobante.to_xml(include_schema_location=True)
            validate(comprobante, root)
            return root

        root = clock.wrap_sync("validation", check)()
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    issue(0)  # compile the schema and XSLT once, as a long-lived worker would
    clock.reset()
    started = time.perf_counter()
    documents = [issue(n) for n in range(1, count + 1)]
    elapsed = time.perf_counter() - started

    pdf_count = max(1, min(10, count // 20))
    stamped = [pac.ledger.stamp(xml, None).xml.encode() for xml in documents[:pdf_count]]
    render_pdf(stamped[0])  # load fonts and stylesheets once
    for xml in stamped:
        clock.wrap_sync("pdf", render_pdf)(xml)

    per_step = {step: clock.spent[step] / count for step in CPU_STEPS[:3]}
    per_step["pdf"] = clock.spent["pdf"] / pdf_count
    total = sum(per_step.values())
    figure("invoices built+sealed+validated (CPU, 1 thread)", count / elapsed, "invoices/s")
    figure(f"PDF rendering ({pdf_count} stamped invoices)", 1 / per_step["pdf"], "PDFs/s")
    for step, seconds in per_step.items():
        figure(
            f"  {step} per invoice ({100 * seconds / total:.1f}% of build+seal+validate+PDF)",
            seconds * 1000,
            "ms",
        )


@contextmanager
def instrumented(clock: Clock, *, in_thread: bool) -> Iterator[None]:
    """Time the phases by wrapping what the actors call; undone afterwards. `in_thread`
    renders PDFs in the worker's own threads, as before the render processes (the baseline)."""
    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, wrapper: Any) -> None:
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, wrapper)

    patch(cfdi40.Comprobante, "sign", clock.wrap_sync("signing", cfdi40.Comprobante.sign))
    patch(cfdi, "validate", clock.wrap_sync("validation", cfdi.validate))
    render = _in_worker_thread if in_thread else _counting_cpu(clock)
    patch(PdfRenderer, "render", clock.wrap_async("pdf", render))
    patch(PacGateway, "stamp", clock.wrap_sync("pac", PacGateway.stamp))
    patch(SmtpMailer, "send_email", clock.wrap_async("smtp", SmtpMailer.send_email))
    for method in _DB_METHODS:
        original = getattr(asyncpg.connection.Connection, method)
        patch(asyncpg.connection.Connection, method, clock.wrap_async("database", original))
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def _counting_cpu(clock: Clock) -> Any:
    """`PdfRenderer.render`, adding the render process's own CPU to the clock's "pdf cpu"."""
    render = PdfRenderer.render

    async def counted(self: PdfRenderer, stamped_xml: bytes) -> RenderedPdf:
        rendered = await render(self, stamped_xml)
        clock.spent["pdf cpu"] += rendered.cpu_seconds
        return rendered

    return counted


async def _in_worker_thread(_self: PdfRenderer, stamped_xml: bytes) -> RenderedPdf:
    """The render as it was: a thread of the worker's process, holding its GIL (its CPU is
    this process's, so no render-process CPU is counted)."""
    content = await asyncio.to_thread(render_pdf, stamped_xml)
    return RenderedPdf(content, pid=os.getpid(), cpu_seconds=0.0)


async def insert_payments(url: str, count: int) -> list[int]:
    conn = await connect(url)
    try:
        rows = await conn.fetch(
            """
            INSERT INTO payments (provider, provider_payment_id, amount_minor, currency,
                customer_email, customer_locale, product_ref, product_kind, metadata, status,
                status_at, approved_at)
            SELECT 'stripe', 'pi_bench_' || g, 129900 + g, 'mxn', 'buyer' || g || '@example.com',
                'es', 'bench-product', 'license', $2::jsonb, 'approved', now(), now()
            FROM generate_series(1, $1) AS g
            RETURNING id
            """,
            count,
            {
                "rfc": RECEIVER_RFC,
                "fiscal_name": RECEIVER_NAME,
                "fiscal_regime": "601",
                "fiscal_postal_code": "86991",
                "cfdi_use": "G03",
            },
        )
        return [row["id"] for row in rows]
    finally:
        await conn.close()


@dataclasses.dataclass
class Run:
    rate: float
    shares: dict[str, float]
    pdf_cpu_ms: float  # per invoice, in the render processes
    process_cpu_ms: float  # per invoice, in this process: worker, stand-in PAC and SMTP


async def end_to_end(
    count: int,
    threads: int,
    pdf_processes: int,
    csd: CsdFiles,
    pac: StandInSW,
    *,
    in_thread: bool = False,
) -> Run:
    prefix = f"bench{uuid.uuid4().hex[:6]}_"
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp, SmtpSink() as smtp:
        cer, key = csd.write(Path(tmp), "csd")
        async with scratch_database() as url:
            settings = Settings(
                database_url=url,
                broker_url=AMQP_URL,
                queue_prefix=prefix,
                data_dir=Path(tmp, "data"),
                db_pool_max=threads + 2,
                pdf_processes=pdf_processes,
                pac_base_url=pac.url,
                pac_token=SecretStr(pac.token),
                cfdi_csd_cer_path=cer,
                cfdi_csd_key_path=key,
                cfdi_csd_password=SecretStr(csd.password),
                cfdi_issuer_rfc=ISSUER_RFC,
                cfdi_issuer_name=ISSUER_NAME,
                cfdi_issuer_regime="601",
                cfdi_issuer_postal_code="42501",
                smtp_host=smtp.host,
                smtp_port=smtp.port,
                smtp_starttls=False,
                _env_file=None,
            )
            payment_ids = await insert_payments(url, count + 1)
            with instrumented(clock, in_thread=in_thread):
                resources = Resources(
                    settings, database_url=url, publisher=AmqpPublisher(AMQP_URL, prefix)
                )
                actors = timed_actors(clock, TIMED_ACTORS)
                broker = build_broker(settings, resources, actors, broker_url=AMQP_URL)
                broker.emit_after("process_boot")
                worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
                worker.start()
                try:
                    stamp = broker.get_actor("stamp_invoice")
                    stamp.send(payment_ids[0])  # warm-up: pool, channels, CSD, schema, fonts
                    await smtp.wait_for_async(1, timeout=120)
                    clock.reset()
                    started = time.perf_counter()
                    cpu_started = time.process_time()
                    for payment_id in payment_ids[1:]:
                        stamp.send(payment_id)
                    await smtp.wait_for_async(count + 1, timeout=1200)
                    elapsed = time.perf_counter() - started
                    process_cpu = time.process_time() - cpu_started
                finally:
                    await asyncio.to_thread(worker.stop)
                    broker.close()
                    delete_queues(prefix)
    total = clock.spent["total"]
    shares = {phase: 100 * clock.spent[phase] / total for phase in E2E_PHASES}
    shares["other"] = max(0.0, 100 - sum(shares.values()))
    return Run(
        rate=count / elapsed,
        shares=shares,
        pdf_cpu_ms=1000 * clock.spent["pdf cpu"] / count,
        process_cpu_ms=1000 * process_cpu / count,
    )


async def run_all(invoices: int, e2e: int, thread_counts: list[int], pdf_processes: int) -> None:
    ca = make_ca()
    csd = make_csd(ca)
    sat = make_sat_certificate(ca)
    pac = StandInSW(sat_signer=load_signer(sat.certificate, sat.key, sat.password))
    await pac.start()
    try:
        cpu_only(invoices, csd, pac)
        baseline: float | None = None
        for threads in thread_counts:
            before = await end_to_end(e2e, threads, pdf_processes, csd, pac, in_thread=True)
            result = await end_to_end(e2e, threads, pdf_processes, csd, pac)
            name = f"invoices end to end (stand-in PAC, PDF, email), {threads} worker thread(s)"
            figure(
                f"{name}, PDF in the worker's threads (as before)",
                before.rate,
                "invoices/s",
            )
            figure(
                name,
                result.rate,
                "invoices/s",
                baseline=before.rate,
                baseline_name="PDF in the worker's threads",
            )
            if baseline is not None:
                figure(
                    f"{name} vs {thread_counts[0]} thread(s)",
                    result.rate,
                    "invoices/s",
                    baseline=baseline,
                    baseline_name=f"{thread_counts[0]} thread(s)",
                )
            baseline = baseline or result.rate
            for phase, share in result.shares.items():
                figure(f"  share of actor time in {phase}, {threads} thread(s)", share, "%")
            figure(
                f"  CPU per PDF in the {pdf_processes} render processes, {threads} thread(s)",
                result.pdf_cpu_ms,
                "ms",
            )
            figure(
                f"  CPU per invoice in this process (worker, stand-ins), {threads} thread(s)",
                result.process_cpu_ms,
                "ms",
            )
    finally:
        await pac.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--invoices", type=int, default=200, help="invoices for the CPU-only figure"
    )
    parser.add_argument("--e2e", type=int, default=40, help="invoices per end-to-end run")
    parser.add_argument("--threads", default="1,4", help="comma-separated worker thread counts")
    parser.add_argument(
        "--pdf-processes", type=int, default=2, help="render processes of the worker"
    )
    args = parser.parse_args()
    configure_logging(dev=True, level="WARNING")  # the figures are the output
    print(
        f"machine: {machine()}; CPU-only invoices: {args.invoices}; "
        f"end-to-end invoices per run: {args.e2e}; render processes: {args.pdf_processes}"
    )
    thread_counts = [int(n) for n in args.threads.split(",")]
    asyncio.run(run_all(args.invoices, args.e2e, thread_counts, args.pdf_processes))


if __name__ == "__main__":
    main()
