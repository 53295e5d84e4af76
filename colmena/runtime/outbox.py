"""Moving outbox rows onto the broker: right after commit, and again by the relay.

`publish_now` is the fast path a handler or actor calls after its transaction commits. The relay
is the safety net: it republishes whatever is still unpublished after a grace period (the process
died between commit and publish, or RabbitMQ was down). A row may thus be published twice, never
zero times; consumers are idempotent (DESIGN.md rule 3).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import structlog

from colmena.config.metrics import OUTBOX_PUBLISH_FAILURES, OUTBOX_PUBLISHED
from colmena.runtime.publisher import Publisher
from colmena.store import outbox
from colmena.store.outbox import OutboxMessage

log = structlog.get_logger(__name__)


async def _publish_and_record(
    conn: asyncpg.Connection, publisher: Publisher, rows: Sequence[OutboxMessage], path: str
) -> int:
    results = await publisher.publish_many(rows)
    sent = [row.id for row, ok in zip(rows, results, strict=True) if ok]
    failed = [row.id for row, ok in zip(rows, results, strict=True) if not ok]
    await outbox.mark_published(conn, sent)
    await outbox.note_failures(conn, failed, "broker did not confirm")
    OUTBOX_PUBLISHED.labels(path=path).inc(len(sent))
    if failed:
        OUTBOX_PUBLISH_FAILURES.labels(path=path).inc(len(failed))
    return len(sent)


async def publish_now(
    pool: asyncpg.Pool, publisher: Publisher, rows: Sequence[OutboxMessage | None]
) -> int:
    """Publish rows a committed transaction recorded; failures are left for the relay."""
    pending = [row for row in rows if row is not None]
    if not pending:
        return 0
    async with pool.acquire() as conn:
        return await _publish_and_record(conn, publisher, pending, "direct")


async def relay_once(
    pool: asyncpg.Pool, publisher: Publisher, *, grace_s: float, batch: int = 500
) -> int:
    """Publish one batch of rows older than `grace_s`; returns how many the broker confirmed.

    The rows stay locked (SKIP LOCKED) while they are published, so two relays never send the
    same batch at once.
    """
    async with pool.acquire() as conn, conn.transaction():
        rows = await outbox.claim_pending(conn, older_than_s=grace_s, limit=batch)
        if not rows:
            return 0
        sent = await _publish_and_record(conn, publisher, rows, "relay")
    if sent:
        log.debug("relay published pending outbox rows", count=sent)
    return sent


async def relay_until_empty(
    pool: asyncpg.Pool, publisher: Publisher, *, grace_s: float, batch: int = 500
) -> int:
    """Drain the backlog in batches; stops early if a batch could not be published."""
    total = 0
    while True:
        sent = await relay_once(pool, publisher, grace_s=grace_s, batch=batch)
        total += sent
        if sent < batch:
            return total
