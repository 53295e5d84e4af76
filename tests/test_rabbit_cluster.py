"""colmena on a three-node RabbitMQ cluster of its own, every queue a quorum queue.

One cluster serves the module (it takes ~10 s to form); a test that kills a node starts it again
before it ends. Proved here: every queue colmena declares (.DQ and .XQ included) is a quorum
queue and the dead-letter TTL is accepted; a retried message waits in the delay queue and runs
after its backoff; an exhausted one lands in .XQ; a killed consumer's unacknowledged message is
redelivered; and webhooks become licenses, none lost and none twice, while a node is SIGKILLed
mid-run and publishers and consumers fail over.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL
from dramatiq.middleware import CurrentMessage
from pydantic import SecretStr

from bench.cluster.rabbitmq import RABBIT_BIN, RabbitCluster
from colmena.actors import all_actors
from colmena.config import Settings
from colmena.gateways import sample_events as events
from colmena.runtime import scheduler
from colmena.runtime.broker_check import check_broker
from colmena.runtime.broker_nodes import node_label
from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.queues import queue_declarations
from colmena.runtime.registry import actor
from colmena.runtime.resources import Resources
from colmena.store import outbox
from colmena.store.pool import connect
from tests import ops_support
from tests.conftest import in_ci, wait_for
from tests.licenses_support import PRODUCT, license_settings
from tests.ops_support import colmena_env, free_port
from tests.payments_support import (
    LICENSE_METADATA,
    STRIPE_SECRET,
    payment_status,
    stripe_post_args,
)
from tests.standins.smtp import SmtpStandin

spawn = ops_support.spawn
CLUSTER_QUEUE = "clustered"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    if not (RABBIT_BIN / "rabbitmq-server").exists():
        reason = f"no RabbitMQ binaries in {RABBIT_BIN}"
        if in_ci():
            pytest.fail(f"{reason}, and CI=true: the cluster tests must run", pytrace=False)
        pytest.skip(f"{reason} (with CI=true this fails instead)")
    with RabbitCluster(tmp_path_factory.mktemp("rabbit")) as started:
        yield started


@pytest.fixture
def on_cluster(settings: Settings, cluster: RabbitCluster) -> Settings:
    """This test's settings on every node of the cluster, quorum queues on."""
    return settings.model_copy(
        update={"broker_url": SecretStr(",".join(cluster.urls)), "quorum_queues": True}
    )


def cluster_counts(cluster: RabbitCluster, name: str) -> tuple[int, int, int]:
    """(ready in Q, in Q.DQ, in Q.XQ), by passive declares on the first node that answers."""
    connection = pika.BlockingConnection([pika.URLParameters(url) for url in cluster.urls])
    try:
        channel = connection.channel()
        counts = [
            channel.queue_declare(queue=queue, passive=True).method.message_count
            for queue, _ in queue_declarations(name, quorum=True)
        ]
        return counts[0], counts[1], counts[2]
    finally:
        connection.close()


async def _attempt(resources: Resources, label: str) -> int:
    """Record one run of `label`; how many runs it has had, this one included."""
    message = CurrentMessage.get_current_message()
    await resources.pool.execute(
        "CREATE TABLE IF NOT EXISTS cluster_attempts (label text, message_id text, "
        "retries int, at timestamptz DEFAULT clock_timestamp())"
    )
    await resources.pool.execute(
        "INSERT INTO cluster_attempts (label, message_id, retries) VALUES ($1, $2, $3)",
        label,
        message.message_id if message else None,
        message.options.get("retries", 0) if message else None,
    )
    return await resources.pool.fetchval(
        "SELECT count(*) FROM cluster_attempts WHERE label = $1", label
    )


@actor(queue=CLUSTER_QUEUE, name="cluster_fails_once")
async def fails_once(resources: Resources, label: str) -> None:
    if await _attempt(resources, label) == 1:
        raise RuntimeError("first attempt fails")


@actor(queue=CLUSTER_QUEUE, name="cluster_always_fails")
async def always_fails(resources: Resources, label: str) -> None:
    await _attempt(resources, label)
    raise RuntimeError("never works")


async def attempts(db, label: str) -> list:
    if not await db.fetchval("SELECT to_regclass('cluster_attempts') IS NOT NULL"):
        return []
    return await db.fetch(
        "SELECT message_id, retries, at FROM cluster_attempts WHERE label = $1 ORDER BY at", label
    )


async def test_every_colmena_queue_is_a_quorum_queue_with_the_dead_letter_ttl(
    on_cluster: Settings, cluster: RabbitCluster, start_worker
) -> None:
    start_worker(settings_override=on_cluster)  # consumes (so declares) every actor's queue
    prefix = on_cluster.queue_prefix
    expected = {
        name
        for queue in {spec.queue for spec in all_actors()}
        for name, _ in queue_declarations(prefix + queue, quorum=True)
    }

    async def declared() -> dict[str, tuple[str, dict]]:
        found = await asyncio.to_thread(cluster.queue_details)
        mine = {name: found[name] for name in found if name.startswith(prefix)}
        return mine if set(mine) >= expected else {}

    found = await wait_for(declared, timeout=60, interval=0.5)
    assert set(found) == expected
    assert {name: kind for name, (kind, _) in found.items()} == dict.fromkeys(expected, "quorum")
    for name, (_, arguments) in found.items():
        if name.endswith(".XQ"):
            assert arguments["x-message-ttl"] == DEAD_MESSAGE_TTL, (name, arguments)
        else:
            assert arguments["x-dead-letter-routing-key"] == name.removesuffix(".DQ") + ".XQ"


async def test_a_retried_message_waits_in_the_delay_queue_then_runs_after_its_backoff(
    on_cluster: Settings, cluster: RabbitCluster, start_worker, db
) -> None:
    slow_retry = on_cluster.model_copy(update={"min_backoff_ms": 4_000, "max_backoff_ms": 4_000})
    name = slow_retry.queue_prefix + CLUSTER_QUEUE
    first = start_worker(settings_override=slow_retry, queues=[CLUSTER_QUEUE])
    message = first.broker.get_actor("cluster_fails_once").send("retried")
    await wait_for(lambda: attempts(db, "retried"))
    first.worker.stop()  # the retry (due in 2-4 s) goes back to the delay queue, unconsumed
    assert await asyncio.to_thread(cluster_counts, cluster, name) == (0, 1, 0)

    start_worker(settings_override=slow_retry, queues=[CLUSTER_QUEUE])
    rows = await wait_for(lambda: _runs(db, "retried", 2), timeout=30)
    assert [(row["message_id"], row["retries"]) for row in rows] == [
        (message.message_id, 0),
        (message.message_id, 1),
    ]
    assert (rows[1]["at"] - rows[0]["at"]).total_seconds() >= 2.0  # jitter halves 4 s at most
    await wait_for(lambda: _counts_are(cluster, name, (0, 0, 0)))


async def test_a_message_that_exhausts_its_retries_lands_in_the_dead_letter_queue(
    on_cluster: Settings, cluster: RabbitCluster, start_worker, db
) -> None:
    name = on_cluster.queue_prefix + CLUSTER_QUEUE
    system = start_worker(settings_override=on_cluster, queues=[CLUSTER_QUEUE])
    message = system.broker.get_actor("cluster_always_fails").send("doomed")
    await wait_for(lambda: _counts_are(cluster, name, (0, 0, 1)), timeout=30)
    rows = await attempts(db, "doomed")
    assert [row["retries"] for row in rows] == list(range(on_cluster.max_retries + 1))
    assert {row["message_id"] for row in rows} == {message.message_id}


async def _runs(db, label: str, count: int) -> list:
    rows = await attempts(db, label)
    return rows if len(rows) >= count else []


async def _counts_are(cluster: RabbitCluster, name: str, wanted: tuple[int, int, int]) -> bool:
    return await asyncio.to_thread(cluster_counts, cluster, name) == wanted


async def blocked_on_lock(db) -> bool:
    return await db.fetchval(
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )


async def test_a_killed_consumers_unacked_message_is_redelivered_once(
    on_cluster: Settings, cluster: RabbitCluster, make_client, spawn, db, database_url, tmp_path
) -> None:
    """`colmena worker` on the cluster (a dead node first in its list) takes a payment, is
    SIGKILLed holding it unacknowledged, and a second worker applies it, once."""
    pay = on_cluster.model_copy(update={"stripe_webhook_secrets": SecretStr(STRIPE_SECRET)})
    client = await make_client(pay)
    dead = f"amqp://colmena:pw@127.0.0.1:{free_port()}/%2F"
    env = colmena_env(
        pay,
        COLMENA_BROKER_URL=",".join([dead, *cluster.urls]),
        COLMENA_QUORUM_QUEUES="true",
        COLMENA_METRICS_PORT=str(free_port()),
    )
    argv = ["worker", "--queues", "payments", "--processes", "1", "--threads", "1"]
    intent = events.payment_intent(metadata=LICENSE_METADATA)
    blocker = await connect(database_url)
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute("LOCK TABLE payments IN SHARE ROW EXCLUSIVE MODE")
    response = await client.post(
        "/webhooks/stripe",
        **stripe_post_args(events.stripe_event("payment_intent.succeeded", intent)),
    )
    assert response.status == 200
    first = spawn("first", argv, env)
    try:
        await wait_for(lambda: blocked_on_lock(db), timeout=60)
    finally:
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait(timeout=30)
        await transaction.rollback()
        await blocker.close()
    warnings = [line for line in first.output().splitlines() if "broker node unreachable" in line]
    assert len(warnings) == 1 and node_label(dead) in warnings[0], first.output()
    assert "colmena:pw" not in first.output() and cluster.password not in first.output()
    assert await payment_status(db, "stripe", intent["id"]) is None

    second = spawn("second", argv, env)
    await wait_for(
        lambda: db.fetchval("SELECT count(*) = 1 FROM inbox WHERE processed_at IS NOT NULL"),
        timeout=60,
    )
    assert await payment_status(db, "stripe", intent["id"]) == "approved"
    assert await db.fetchval("SELECT count(*) FROM payment_events") == 1
    assert second.process.poll() is None, second.output()


async def test_a_publisher_nacked_after_a_leader_failover_reopens_and_publishes(
    on_cluster: Settings, cluster: RabbitCluster, db
) -> None:
    """RabbitMQ 3.10 goes on nacking every message a channel sends to a quorum queue whose
    leader died under it, while a fresh channel is served; the publisher must start one."""
    prefix = on_cluster.queue_prefix
    check_broker(cluster.url(0), prefix, [CLUSTER_QUEUE], quorum=True)  # leaders on node 0
    async with db.transaction():
        rows = [
            await outbox.record(db, queue=CLUSTER_QUEUE, actor="cluster_fails_once", args=[label])
            for label in ("before", "after")
        ]
    publisher = AmqpPublisher([cluster.url(1), cluster.url(2)], prefix, quorum=True)
    try:
        assert await publisher.check()  # the channel is open on node 1 before node 0 dies
        await asyncio.to_thread(cluster.kill, 0)
        for row in rows:
            await wait_for(lambda row=row: _published(publisher, row), timeout=30, interval=0.2)
    finally:
        await publisher.close()
        await asyncio.to_thread(cluster.start, 0)
    counts = await asyncio.to_thread(cluster_counts, cluster, prefix + CLUSTER_QUEUE)
    assert counts[0] >= 2  # nacked copies were not enqueued; confirmed ones were


async def _published(publisher: AmqpPublisher, row: outbox.OutboxMessage) -> bool:
    return await publisher.publish_many([row]) == [True]


@pytest.fixture
def smtp() -> Iterator[SmtpStandin]:
    with SmtpStandin() as server:
        yield server


async def test_webhooks_become_licenses_with_a_node_killed_mid_run(
    on_cluster: Settings,
    cluster: RabbitCluster,
    start_worker,
    make_client,
    smtp: SmtpStandin,
    db,
    tmp_path: Path,
) -> None:
    """The first node (the one every connection dialled first) is SIGKILLed with half the
    webhooks in: ingress publisher, worker consumers and the relay move to the others; every
    payment gets exactly one license and one email."""
    total = 20
    active = license_settings(on_cluster, smtp, tmp_path).model_copy(
        update={"stripe_webhook_secrets": SecretStr(STRIPE_SECRET), "relay_interval_s": 0.5}
    )
    start_worker(settings_override=active, queues=["payments", "licenses"], threads=4)
    client = await make_client(active)
    relay = Resources(
        active,
        database_url=active.require_database_url(),
        publisher=AmqpPublisher(active.broker_urls(), active.queue_prefix, quorum=True),
    )
    await relay.start()
    stop = asyncio.Event()
    relaying = asyncio.create_task(scheduler.run_forever(relay, [], stop))
    metadata = {**LICENSE_METADATA, "product": PRODUCT}

    async def post(index: int) -> None:
        intent = events.payment_intent(metadata=metadata, email=f"buyer{index}@example.com")
        response = await client.post(
            "/webhooks/stripe",
            **stripe_post_args(events.stripe_event("payment_intent.succeeded", intent)),
        )
        assert response.status == 200, await response.text()

    try:
        for index in range(total // 2):
            await post(index)
        await wait_for(lambda: db.fetchval("SELECT count(*) > 0 FROM licenses"), timeout=60)
        await asyncio.to_thread(cluster.kill, 0)
        for index in range(total // 2, total):
            await post(index)
        await wait_for(
            lambda: db.fetchval("SELECT count(*) = $1 FROM licenses", total), timeout=120
        )
        await smtp.wait_for_async(total, timeout=60)
        await wait_for(
            lambda: db.fetchval("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL"),
            timeout=30,
        )
    finally:
        stop.set()
        await relaying
        await relay.close()
        await asyncio.to_thread(cluster.start, 0)
    assert await db.fetchval("SELECT count(DISTINCT payment_id) FROM licenses") == total
    assert await db.fetchval("SELECT count(*) FROM payments WHERE status = 'approved'") == total
    recipients = sorted(rcpt for mail in smtp.messages for rcpt in mail.rcpt_tos)
    assert recipients == sorted(f"buyer{index}@example.com" for index in range(total))
    assert await asyncio.to_thread(cluster.running_nodes) == sorted(
        cluster.node_name(index) for index in range(3)
    )
