"""CFDI PDFs rendered in processes of their own, so a worker's threads are not held by the GIL.

weasyprint lays a page out in pure Python: ~150-400 ms of CPU per invoice, nearly all of a
stamping worker's CPU, and all of it under the GIL, so threads rendering side by side only take
turns (4 threads stamped at 0.9x the rate of one). Each worker process therefore owns a pool of
at most ``COLMENA_PDF_PROCESSES`` render processes (a `SharedClient`, created on the first PDF
and shut down with the process's `Resources`), and a delivery awaits its PDF there while the
worker's threads seal, stamp and email other invoices.

The children are started with "spawn" (a fresh interpreter: forking a threaded worker can copy a
lock held by another thread), load weasyprint when they start rather than in the first render,
ignore Ctrl-C (the worker's shutdown closes the pool) and exit as soon as their worker does, so
a killed worker leaves no orphans. A render is a pure function of the stamped XML: when a child
dies mid-render (killed, out of memory), the delivery fails with `PdfRenderInterrupted`, which is
retryable, the broken pool is replaced, and the message's retry renders again from scratch.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import structlog

from colmena.config import Settings
from colmena.config.shared_client import SharedClient
from colmena.errors import TransientError
from colmena.gateways.cfdi import load_pdf_engine, render_pdf

log = structlog.get_logger(__name__)


class PdfRenderInterrupted(TransientError):
    """A render process died before it answered; a retry renders again in a fresh one."""


@dataclass(frozen=True)
class RenderedPdf:
    """The PDF, and which process spent how much CPU on it (the delivery logs both)."""

    content: bytes
    pid: int
    cpu_seconds: float


class PdfRenderer:
    """A bounded pool of render processes, replaced whole when one of its children dies."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        """A pool whose `processes` children are all starting: a spawned child only starts when
        no idle one is left, so one no-op each starts them now, side by side, instead of one
        burst of invoices waiting for a fresh interpreter to import weasyprint."""
        pool = ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_child,
        )
        for _ in range(self.processes):
            pool.submit(os.getpid)
        return pool

    async def render(self, stamped_xml: bytes) -> RenderedPdf:
        """The printed representation of a stamped CFDI, rendered in a child process."""
        with self._lock:
            pool = self._pool
        try:
            return await asyncio.wrap_future(pool.submit(_render, stamped_xml))
        except BrokenProcessPool as exc:
            self._replace(pool)
            raise PdfRenderInterrupted(
                "a PDF render process died before answering; the retry renders again"
            ) from exc

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """A fresh pool for the next render; the first caller to see `broken` replaces it."""
        with self._lock:
            if self._pool is not broken:
                return
            self._pool = self._new_pool()
        broken.shutdown(wait=False, cancel_futures=True)
        log.warning("a PDF render process died: its pool is replaced")

    async def close(self) -> None:
        """Stop the children, once each finishes the render it holds; queued ones are dropped
        (their messages are retried)."""
        with self._lock:
            pool = self._pool
        await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


def _start_child() -> None:
    """Each render process's first act: ignore Ctrl-C (sent to the whole terminal's process
    group; the worker's shutdown stops the pool), exit with the worker, load weasyprint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_with_parent, args=(parent.sentinel,), name="parent-watch", daemon=True
        ).start()
    load_pdf_engine()


def _exit_with_parent(sentinel: int) -> None:
    """The sentinel becomes readable when the worker is gone, however it ended."""
    multiprocessing.connection.wait([sentinel])
    os._exit(0)


def _render(stamped_xml: bytes) -> RenderedPdf:
    started = time.process_time()
    content = render_pdf(stamped_xml)
    return RenderedPdf(content, pid=os.getpid(), cpu_seconds=time.process_time() - started)


def pdf_renderer(settings: Settings) -> PdfRenderer:
    return PdfRenderer(settings.pdf_processes)


PDF_RENDERER: SharedClient[PdfRenderer] = SharedClient(
    "pdf-renderer", pdf_renderer, close=PdfRenderer.close
)
