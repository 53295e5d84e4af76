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
    """Rows wait in a list; one task publishes them, a batch at a time, while any are left."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self._rows: list[OutboxMessage] = []
        self._task: asyncio.Task[None] | None = None

    def submit(self, rows: Sequence[OutboxMessage | None]) -> None:
        self._rows.extend(row for row in rows if row is not None)
        if self._rows and self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._rows:
                batch, self._rows = self._rows[:BATCH], self._rows[BATCH:]
                try:
                    await publish_now(
                        self.resources.pool,
                        self.resources.publisher,
                        batch,
                        marks=self.resources.published_marks,
                    )
                except Exception as exc:  # the rows stay pending: the relay sends them
                    log.warning(
                        "after-commit publish failed; the relay will send it",
                        error=type(exc).__name__,
                    )
        finally:  # no await since the list was found empty: no row can be left behind
            self._task = None

    async def drain(self, timeout_s: float) -> None:
        """On shutdown: give queued rows a chance to go out, then stop."""
        task = self._task
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


AFTER_COMMIT = web.AppKey("after_commit_publisher", AfterCommitPublisher)
