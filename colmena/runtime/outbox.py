"""Moving outbox rows onto the broker: right after commit, and again by the relay.

`publish_now` is the fast path a handler or actor calls after its transaction commits (in a
loop worker, it first lets the worker keep the rows it runs itself). The relay
is the safety net: it republishes whatever is still unpublished after a grace period (the process
died between commit and publish, or RabbitMQ was down). A row may thus be published twice, never
zero times; consumers are idempotent (DESIGN.md rule 3).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
import structlog

from colmena.config.metrics import OUTBOX_PUBLISH_FAILURES, OUTBOX_PUBLISHED
from colmena.runtime.follow_ups import keep_local
from colmena.runtime.publisher import Publisher
from colmena.store import outbox
from colmena.store.outbox import OutboxMessage

log = structlog.get_logger(__name__)


UNCONFIRMED = "broker did not confirm"


def _count(path: str, sent: int, failed: int) -> None:
    OUTBOX_PUBLISHED.labels(path=path).inc(sent)
    if failed:
        OUTBOX_PUBLISH_FAILURES.labels(path=path).inc(failed)


class PublishedMarks:
    """Rows the broker confirmed, marked published together: one statement per `window_s`
    instead of one per publish.

    A mark only tells the relay not to send a row again, so it may lag: a mark lost to a crash
    costs one duplicate message, which consumers absorb (DESIGN.md rule 3). `window_s` must stay
    well under the relay's grace, or the relay republishes rows still waiting for their mark;
    0 marks at once.
    """

    def __init__(self, pool: asyncpg.Pool, *, window_s: float) -> None:
        self._pool = pool
        self._window_s = window_s
        self._pending: list[int] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()

    async def add(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        self._pending += ids
        if self._window_s <= 0:
            await self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._window_s, self._due)

    def _due(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self.flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def flush(self) -> None:
        """Mark what is pending now; a failure leaves it to the relay."""
        ids, self._pending = self._pending, []
        if not ids:
            return
        try:
            async with self._pool.acquire() as conn:
                await outbox.mark_published(conn, ids)
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning(
                "could not mark published rows; the relay will send them again",
                count=len(ids),
                error=type(exc).__name__,
            )

    async def close(self) -> None:
        """Mark what is pending before the pool closes."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await asyncio.gather(*self._flushing)
        await self.flush()


async def publish_now(
    pool: asyncpg.Pool,
    publisher: Publisher,
    rows: Sequence[OutboxMessage | None],
    *,
    marks: PublishedMarks | None = None,
) -> int:
    """Publish rows a committed transaction recorded; failures are left for the relay. The
    confirmed rows are marked published before this returns, or with `marks`' next batch.
    In a loop worker, the rows it runs itself are not published (`colmena.runtime.follow_ups`).
    """
    pending = keep_local([row for row in rows if row is not None])
    if not pending:
        return 0
    results = await publisher.publish_many(pending)
    sent = [row.id for row, ok in zip(pending, results, strict=True) if ok]
    failed = [row.id for row, ok in zip(pending, results, strict=True) if not ok]
    if marks is not None:
        await marks.add(sent)
        sent_now: list[int] = []
    else:
        sent_now = sent
    if sent_now or failed:
        async with pool.acquire() as conn:
            await outbox.mark_published(conn, sent_now)
            await outbox.note_failures(conn, failed, UNCONFIRMED)
    _count("direct", len(sent), len(failed))
    return len(sent)


async def relay_once(
    pool: asyncpg.Pool, publisher: Publisher, *, grace_s: float, batch: int = 500
) -> int:
    """Publish one batch of rows older than `grace_s`; returns how many the broker confirmed.

    One transaction: claim the rows and mark them published (one statement), publish, put the
    unconfirmed back to pending, commit. The rows stay locked (SKIP LOCKED) meanwhile, so two
    relays never send the same batch at once, and a crash before the commit leaves them all
    pending (published again later: at least once).
    """
    async with pool.acquire() as conn, conn.transaction():
        rows = await outbox.claim_and_mark(conn, older_than_s=grace_s, limit=batch)
        if not rows:
            return 0
        results = await publisher.publish_many(rows)
        failed = [row.id for row, ok in zip(rows, results, strict=True) if not ok]
        await outbox.unmark(conn, failed, UNCONFIRMED)
    sent = len(rows) - len(failed)
    _count("relay", sent, len(failed))
    if sent:
        log.debug("relay published pending outbox rows", count=sent)
    return sent


async def relay_until_empty(
    pool: asyncpg.Pool, publisher: Publisher, *, grace_s: float, batch: int = 500, lanes: int = 2
) -> int:
    """Drain the backlog in batches; stop at the first batch that comes back short (the backlog
    is drained, or the broker did not confirm everything: the rest waits for the next tick).

    The first batch goes alone. If it was full there is a backlog, and then `lanes` batches are
    in flight at once (SKIP LOCKED keeps them apart), so one batch's database work overlaps
    another's wait for RabbitMQ's confirms.
    """
    first = await relay_once(pool, publisher, grace_s=grace_s, batch=batch)
    if first < batch:
        return first
    short = False

    async def lane() -> int:
        nonlocal short
        total = 0
        while not short:
            sent = await relay_once(pool, publisher, grace_s=grace_s, batch=batch)
            total += sent
            short = short or sent < batch
        return total

    tasks = [asyncio.ensure_future(lane()) for _ in range(lanes)]
    try:
        return first + sum(await asyncio.gather(*tasks))
    finally:  # one lane failed or we were cancelled: stop the others, keep the first error
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
