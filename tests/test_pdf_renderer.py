"""Invoice PDFs render in processes of the worker's own: bounded, replaced when one dies, gone
with the worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from colmena.config import Settings
from colmena.errors import is_permanent
from colmena.gateways.cfdi import load_signer, sign_invoice
from colmena.gateways.pdf_renderer import PDF_RENDERER, PdfRenderer, PdfRenderInterrupted
from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.resources import Resources
from tests.conftest import wait_for
from tests.standins.csd import CsdFiles, make_ca, make_csd
from tests.standins.pac import sample_invoice


@pytest.fixture(scope="module")
def invoice_xml() -> bytes:
    csd: CsdFiles = make_csd(make_ca())
    return sign_invoice(sample_invoice(), load_signer(csd.certificate, csd.key, csd.password)).xml


def gone(pid: int) -> bool:
    """Whether `pid` has exited (a zombie not yet reaped by its new parent counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


async def until_gone(pid: int) -> None:
    async def check() -> bool:
        return gone(pid)

    await wait_for(check, timeout=20)


async def test_pdfs_render_in_at_most_the_configured_processes_which_stop_with_resources(
    settings: Settings, invoice_xml: bytes
) -> None:
    resources = Resources(
        settings.model_copy(update={"pdf_processes": 2}),
        database_url=settings.require_database_url(),
        publisher=AmqpPublisher(settings.require_broker_url(), settings.queue_prefix),
    )
    renderer = resources.shared(PDF_RENDERER)

    rendered = await asyncio.gather(*(renderer.render(invoice_xml) for _ in range(5)))

    assert all(r.content.startswith(b"%PDF-") and len(r.content) > 5000 for r in rendered)
    assert all(r.cpu_seconds > 0 for r in rendered)
    pids = {r.pid for r in rendered}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert not any(gone(pid) for pid in pids)  # kept for the next PDF, not one per render

    await resources.close()

    assert all(gone(pid) for pid in pids)  # the shutdown joined them


async def test_a_render_process_killed_mid_render_fails_that_render_and_the_next_one_renders(
    invoice_xml: bytes,
) -> None:
    renderer = PdfRenderer(processes=1)
    try:
        first = await renderer.render(invoice_xml)
        os.kill(first.pid, signal.SIGSTOP)  # holds the next render mid-way
        pending = asyncio.ensure_future(renderer.render(invoice_xml))
        await asyncio.sleep(0)  # one turn of the loop: the render is handed to the child
        os.kill(first.pid, signal.SIGKILL)

        with pytest.raises(PdfRenderInterrupted) as interrupted:
            await pending
        assert not is_permanent(interrupted.value)  # the message is retried

        again = await renderer.render(invoice_xml)
        assert again.content.startswith(b"%PDF-") and again.pid != first.pid
    finally:
        await renderer.close()


async def test_render_processes_exit_when_their_worker_is_killed(invoice_xml: bytes) -> None:
    """A worker killed with SIGKILL runs no shutdown: its render processes must notice alone."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from colmena.gateways.pdf_renderer import PdfRenderer

        async def main():
            renderer = PdfRenderer(processes=1)  # held: a dropped pool stops its children
            rendered = await renderer.render(sys.stdin.buffer.read())
            print(rendered.pid, flush=True)
            await asyncio.Event().wait()

        asyncio.run(main())
        """
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.write(invoice_xml)
        worker.stdin.close()
        child = int(await asyncio.to_thread(worker.stdout.readline))
        assert not gone(child)

        worker.kill()
        await asyncio.to_thread(worker.wait)

        await until_gone(child)
    finally:
        worker.kill()
        worker.wait()
