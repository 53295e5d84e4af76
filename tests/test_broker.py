"""Actors on the real RabbitMQ: retries with backoff, dead letters, async actors using the pool."""

from __future__ import annotations

import asyncio

import structlog

from colmena.errors import PermanentError, TransientError
from colmena.runtime.outbox import publish_now
from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.registry import actor
from colmena.runtime.resources import Resources
from colmena.store import outbox
from colmena.store.pool import create_pool
from tests.conftest import queue_counts, wait_for

TEST_QUEUE = "testing"


async def _note(resources: Resources, label: str) -> None:
    message_id = structlog.contextvars.get_contextvars().get("message_id")
    await resources.pool.execute(
        "CREATE TABLE IF NOT EXISTS test_attempts "
        "(label text, message_id text, at timestamptz DEFAULT clock_timestamp())"
    )
    await resources.pool.execute(
        "INSERT INTO test_attempts (label, message_id) VALUES ($1, $2)", label, message_id
    )


@actor(queue=TEST_QUEUE, name="test_always_fails")
async def always_fails(resources: Resources, label: str) -> None:
    await _note(resources, label)
    raise RuntimeError("boom")


@actor(queue=TEST_QUEUE, name="test_fails_permanently")
async def fails_permanently(resources: Resources, label: str) -> None:
    await _note(resources, label)
    raise PermanentError("cannot ever work")


@actor(queue=TEST_QUEUE, name="test_busy_once")
async def busy_once(resources: Resources, label: str) -> None:
    """Busy on the first attempt, with a known time when it frees up; fine after."""
    await _note(resources, label)
    if len(await attempts(resources.pool, label)) == 1:
        raise TransientError("held elsewhere", retry_after_s=1.5)


@actor(queue=TEST_QUEUE, name="test_writes_row")
async def writes_row(resources: Resources, label: str) -> None:
    await _note(resources, label)


async def attempts(db, label: str) -> list:
    exists = await db.fetchval("SELECT to_regclass('test_attempts') IS NOT NULL")
    if not exists:
        return []
    return await db.fetch(
        "SELECT message_id, at FROM test_attempts WHERE label = $1 ORDER BY at", label
    )


async def test_async_actor_runs_with_the_pool_and_message_context(start_worker, db) -> None:
    system = start_worker()
    message = system.broker.get_actor("test_writes_row").send("hello")
    rows = await wait_for(lambda: attempts(db, "hello"))
    assert rows[0]["message_id"] == message.message_id


async def test_failing_actor_is_retried_with_backoff_then_dead_lettered(
    start_worker, db, settings
) -> None:
    system = start_worker()
    system.broker.get_actor("test_always_fails").send("doomed")
    await wait_for(lambda: _dead_letters(settings.queue_prefix), timeout=30)
    rows = await attempts(db, "doomed")
    assert len(rows) == settings.max_retries + 1
    gaps = [
        (later["at"] - earlier["at"]).total_seconds()
        for earlier, later in zip(rows, rows[1:], strict=False)
    ]
    assert all(gap >= settings.min_backoff_ms / 1000 * 0.5 for gap in gaps), gaps


async def test_a_transient_error_that_knows_when_it_ends_is_retried_then_not_sooner(
    start_worker, db, settings
) -> None:
    """The backoff (min_backoff_ms) is far shorter than the 1.5 s the error names."""
    assert settings.min_backoff_ms < 1000
    system = start_worker()
    system.broker.get_actor("test_busy_once").send("waits")
    rows = await wait_for(
        lambda: _rows_if(attempts(db, "waits"), lambda found: len(found) == 2), timeout=30
    )
    assert (rows[1]["at"] - rows[0]["at"]).total_seconds() >= 1.5
    assert not await _dead_letters(settings.queue_prefix)


async def _rows_if(found, enough):
    rows = await found
    return rows if enough(rows) else None


async def test_permanent_error_goes_to_dead_letters_without_retrying(
    start_worker, db, settings
) -> None:
    system = start_worker()
    system.broker.get_actor("test_fails_permanently").send("hopeless")
    await wait_for(lambda: _dead_letters(settings.queue_prefix), timeout=30)
    assert len(await attempts(db, "hopeless")) == 1


async def test_outbox_row_reaches_the_actor(start_worker, db, database_url, settings) -> None:
    start_worker()
    async with db.transaction():
        row = await outbox.record(
            db, queue=TEST_QUEUE, actor="test_writes_row", args=["via-outbox"]
        )
    pool = await create_pool(database_url)
    publisher = AmqpPublisher(settings.require_broker_url(), settings.queue_prefix)
    try:
        assert await publish_now(pool, publisher, [row]) == 1
    finally:
        await publisher.close()
        await pool.close()
    rows = await wait_for(lambda: attempts(db, "via-outbox"))
    assert rows[0]["message_id"] == row.message_id


async def _dead_letters(prefix: str) -> int:
    return (await asyncio.to_thread(queue_counts, prefix + TEST_QUEUE))[2]
