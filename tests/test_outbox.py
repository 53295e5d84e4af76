"""The outbox against real PostgreSQL and RabbitMQ: nothing lost, nothing from a rollback."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
import textwrap

import dramatiq
import pika
import pytest

from bench.standins.tcp_proxy import TcpProxy
from colmena.runtime.outbox import publish_now, relay_once, relay_until_empty
from colmena.runtime.publisher import AmqpPublisher, encode_row, to_dramatiq_message
from colmena.store import outbox
from colmena.store.pool import create_pool
from tests.conftest import AMQP_URL, queue_counts, wait_for
from tests.standins.choking_proxy import ChokingProxy

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


def queued_message_ids(name: str) -> set[str]:
    """The AMQP message ids waiting in queue `name`, taken off it."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        ids = set()
        while True:
            method, properties, _body = channel.basic_get(name, auto_ack=True)
            if method is None:
                return ids
            ids.add(properties.message_id)
    finally:
        connection.close()


async def published_and_pending(pool) -> tuple[set[str], set[str]]:
    rows = await pool.fetch("SELECT message_id::text, published_at IS NOT NULL AS done FROM outbox")
    return (
        {row["message_id"] for row in rows if row["done"]},
        {row["message_id"] for row in rows if not row["done"]},
    )


async def test_batch_cut_midway_leaves_exactly_the_unconfirmed_rows_pending(
    pool, queue_prefix
) -> None:
    proxy = ChokingProxy("127.0.0.1", 5672)
    port = await proxy.start()
    publisher = AmqpPublisher(
        f"amqp://guest:guest@127.0.0.1:{port}/%2F", queue_prefix, confirm_timeout=2
    )
    try:
        async with pool.acquire() as conn, conn.transaction():
            first = await outbox.record(conn, queue=QUEUE, actor="noop", args=[-1])
        # Opens the connection and declares the queues: what goes upstream next is publishes.
        assert await publish_now(pool, publisher, [first]) == 1
        async with pool.acquire() as conn, conn.transaction():
            for i in range(300):
                await outbox.record(conn, queue=QUEUE, actor="noop", args=[i])
        # About a third of the batch reaches RabbitMQ; the rest is swallowed on the way.
        proxy.choke(after_bytes=30_000)

        sent = await relay_once(pool, publisher, grace_s=0, batch=1000)

        assert 0 < sent < 300
        published, pending = await published_and_pending(pool)
        assert len(published) == 1 + sent and len(pending) == 300 - sent
        assert await asyncio.to_thread(queued_message_ids, queue_prefix + QUEUE) == published
        failed = await pool.fetch(
            "SELECT publish_attempts, last_error FROM outbox WHERE published_at IS NULL"
        )
        assert {(row["publish_attempts"], row["last_error"]) for row in failed} == {
            (1, "broker did not confirm")
        }

        # The same publisher reconnects (new connections pass) and the relay sends the rest.
        assert await relay_until_empty(pool, publisher, grace_s=0) == 300 - sent
        published_after, pending_after = await published_and_pending(pool)
        assert not pending_after
        assert await asyncio.to_thread(queued_message_ids, queue_prefix + QUEUE) == pending
    finally:
        await publisher.close()
        await proxy.cut()


async def test_a_message_rabbitmq_returns_as_unroutable_stays_pending(
    pool, publisher, queue_prefix
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        rows = [await outbox.record(conn, queue=QUEUE, actor="noop", args=[i]) for i in range(2)]
    assert await publish_now(pool, publisher, rows[:1]) == 1
    # Someone deletes the queue behind the publisher's back; it still thinks it is declared.
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    connection.channel().queue_delete(queue_prefix + QUEUE)
    connection.close()

    assert await publish_now(pool, publisher, rows[1:]) == 0
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 1
    # The failure made the publisher declare its queues again, so the relay gets it through.
    assert await relay_until_empty(pool, publisher, grace_s=0) == 1
    assert queue_counts(queue_prefix + QUEUE)[0] == 1


def test_encoded_row_is_what_dramatiq_would_send() -> None:
    row = outbox.OutboxMessage(
        id=1,
        message_id="5b7c6f5e-7a51-4c84-a7a4-0d0f3c0c5e1a",
        queue=QUEUE,
        actor="settle",
        args=[1, "a", {"b": [2]}],
        kwargs={"c": None},
    )
    expected = dataclasses.replace(to_dramatiq_message(row, "p_"), message_timestamp=1234)
    assert encode_row(row, "p_", 1234) == expected.encode()
    assert dramatiq.Message.decode(encode_row(row, "p_", 1234)) == expected


async def test_after_a_failed_connect_the_publisher_waits_a_moment_before_dialling_again(
    queue_prefix,
) -> None:
    proxy = TcpProxy("127.0.0.1", 5672)
    port = await proxy.start()
    await proxy.cut()
    publisher = AmqpPublisher(f"amqp://guest:guest@127.0.0.1:{port}/%2F", queue_prefix)
    try:
        assert not await publisher.check()
        await proxy.restore()
        # Back already, but a call right after the failure does not dial (nor wait) again.
        assert not await publisher.check()
        assert await wait_for(publisher.check, timeout=10)
    finally:
        await publisher.close()
        await proxy.cut()
