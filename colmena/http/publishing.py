"""Publishing committed outbox rows from request handlers without making clients wait.

Rows from concurrent requests are gathered by one background task and published in batches:
one pipelined publish and one `UPDATE outbox` per batch instead of per request. The response
never depends on this succeeding: the rows are durable and the relay sends whatever this misses
(DESIGN.md rule 1: RabbitMQ down still answers 2xx).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog
from aiohttp import web

from colmena.runtime.outbox import publish_now
from colmena.runtime.resources import Resources
from colmena.store.outbox import OutboxMessage

log = structlog.get_logger(__name__)

BATCH = 500


class AfterCommitPublisher:
    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self._queue: asyncio.Queue[OutboxMessage] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def submit(self, rows: Sequence[OutboxMessage | None]) -> None:
        for row in rows:
            if row is not None:
                self._queue.put_nowait(row)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await publish_now(self.resources.pool, self.resources.publisher, batch)
            except Exception as exc:  # the rows stay pending in PostgreSQL: the relay sends them
                log.warning(
                    "after-commit publish failed; the relay will send it", error=type(exc).__name__
                )
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def drain(self, timeout_s: float) -> None:
        """On shutdown: give queued rows a chance to go out, then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


AFTER_COMMIT = web.AppKey("after_commit_publisher", AfterCommitPublisher)


def publish_in_background(app: web.Application, rows: Sequence[OutboxMessage | None]) -> None:
    """Hand rows a handler's transaction committed to the app's batching publisher."""
    app[AFTER_COMMIT].submit(rows)
