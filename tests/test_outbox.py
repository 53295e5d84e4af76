"""The outbox against real PostgreSQL and RabbitMQ: nothing lost, nothing from a rollback."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap

import pytest

from colmena.runtime.outbox import publish_now, relay_once, relay_until_empty
from colmena.runtime.publisher import AmqpPublisher
from colmena.store import outbox
from colmena.store.pool import create_pool
from tests.conftest import AMQP_URL, queue_counts

QUEUE = "payments"


@pytest.fixture
async def pool(database_url: str):
    pool = await create_pool(database_url)
    yield pool
    await pool.close()


@pytest.fixture
async def publisher(queue_prefix: str):
    publisher = AmqpPublisher(AMQP_URL, queue_prefix)
    yield publisher
    await publisher.close()


async def test_rolled_back_follow_up_is_never_published(pool, publisher, queue_prefix) -> None:
    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with pool.acquire() as conn, conn.transaction():
            await outbox.record(conn, queue=QUEUE, actor="noop", args=[1])
            raise Abort
    assert await relay_until_empty(pool, publisher, grace_s=0) == 0
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert queue_counts(queue_prefix + QUEUE)[0] == 0


async def test_committed_follow_up_is_published_exactly_once(pool, publisher, queue_prefix) -> None:
    async with pool.acquire() as conn, conn.transaction():
        row = await outbox.record(conn, queue=QUEUE, actor="noop", args=[1], dedupe_key="k1")
        duplicate = await outbox.record(conn, queue=QUEUE, actor="noop", args=[1], dedupe_key="k1")
    assert duplicate is None
    assert await publish_now(pool, publisher, [row]) == 1
    assert await relay_until_empty(pool, publisher, grace_s=0) == 0
    assert queue_counts(queue_prefix + QUEUE)[0] == 1


async def test_process_killed_between_commit_and_publish_is_repaired_by_the_relay(
    pool, publisher, database_url, queue_prefix
) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal, sys
        from colmena.store import outbox
        from colmena.store.pool import connect

        async def main():
            conn = await connect({database_url!r})
            async with conn.transaction():
                await outbox.record(conn, queue={QUEUE!r}, actor="noop", args=[42])
            print("committed", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == -signal.SIGKILL
    assert "committed" in child.stdout
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 1

    assert await relay_once(pool, publisher, grace_s=0) == 1
    assert await relay_once(pool, publisher, grace_s=0) == 0
    assert queue_counts(queue_prefix + QUEUE)[0] == 1


async def test_rows_wait_while_rabbitmq_is_unreachable_then_go_out(
    pool, publisher, queue_prefix
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        rows = [await outbox.record(conn, queue=QUEUE, actor="noop", args=[i]) for i in range(5)]
    unreachable = AmqpPublisher(
        "amqp://guest:guest@127.0.0.1:1/%2F", queue_prefix, connect_timeout=1
    )
    assert await publish_now(pool, unreachable, rows) == 0
    assert await relay_until_empty(pool, unreachable, grace_s=0) == 0
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 5
    # One attempt on the direct path, one by the relay's single batch; none more.
    attempts = await pool.fetch("SELECT DISTINCT publish_attempts FROM outbox")
    assert [row["publish_attempts"] for row in attempts] == [2]

    assert await relay_until_empty(pool, publisher, grace_s=0) == 5
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
    assert queue_counts(queue_prefix + QUEUE)[0] == 5


async def test_relay_leaves_young_rows_to_the_direct_path(pool, publisher) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await outbox.record(conn, queue=QUEUE, actor="noop")
    assert await relay_once(pool, publisher, grace_s=60) == 0
    assert await relay_once(pool, publisher, grace_s=0) == 1


async def test_two_relays_never_publish_the_same_row(pool, publisher, queue_prefix) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for i in range(300):
            await outbox.record(conn, queue=QUEUE, actor="noop", args=[i])
    other = AmqpPublisher(AMQP_URL, queue_prefix)
    try:
        sent = await asyncio.gather(
            relay_until_empty(pool, publisher, grace_s=0, batch=50),
            relay_until_empty(pool, other, grace_s=0, batch=50),
        )
    finally:
        await other.close()
    assert sum(sent) == 300
    assert queue_counts(queue_prefix + QUEUE)[0] == 300
