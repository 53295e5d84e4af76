"""Operations on the real services: metric names behind alerts and the dashboard, two worker
processes sharing one queue, and `colmena status` reporting what a test put there."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pika
import yaml

from colmena.gateways import sample_events as events
from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.queue_probe import QueueDepth, QueueProbe
from colmena.runtime.queues import queue_declarations
from colmena.store import inbox, outbox
from colmena.store.outbox import OutboxMessage
from tests import ops_support
from tests.conftest import wait_for
from tests.ops_support import colmena_env, exported_names, free_port, scrape, value

OPS = Path(__file__).parent.parent / "ops"
METRIC = re.compile(r"\b((?:colmena|dramatiq)_[a-zA-Z0-9_]+)")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
spawn = ops_support.spawn


def referenced_metrics() -> dict[str, set[str]]:
    """{metric name: where it is used} for every alert rule and dashboard panel."""
    used: dict[str, set[str]] = {}
    rule_files = [
        OPS / "prometheus" / "alerts.yml",
        *sorted((OPS / "prometheus" / "rules").glob("*.yml")),
    ]
    for path in rule_files:
        if path.name.endswith("_test.yml"):
            continue
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                for name in METRIC.findall(rule["expr"]):
                    used.setdefault(name, set()).add(rule.get("alert") or rule.get("record"))
    dashboard = json.loads((OPS / "grafana" / "dashboards" / "colmena.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for name in METRIC.findall(target["expr"]):
                used.setdefault(name, set()).add(f"panel {panel['title']!r}")
    return used


def is_exported(name: str, exported: set[str]) -> bool:
    if name in exported:
        return True
    return any(
        name.endswith(suffix) and name.removesuffix(suffix) in exported
        for suffix in HISTOGRAM_SUFFIXES
    )


def message(actor: str, *args: object, queue: str = "payments") -> OutboxMessage:
    return OutboxMessage(
        id=0, message_id=str(uuid.uuid4()), queue=queue, actor=actor, args=list(args)
    )


async def publish(settings, rows: list[OutboxMessage]) -> None:
    publisher = AmqpPublisher(settings.require_broker_url(), settings.queue_prefix)
    try:
        assert all(await publisher.publish_many(rows))
    finally:
        await publisher.close()


async def stripe_events(db, count: int) -> list[OutboxMessage]:
    """`count` stored Stripe payment events and their (unpublished) messages, as the ingress
    writes them."""
    rows = []
    for _ in range(count):
        event = events.stripe_event("payment_intent.succeeded", events.payment_intent())
        [(_, row)] = await inbox.record_with_messages(
            db,
            [
                inbox.ArrivedEvent(
                    provider="stripe",
                    event_key=event["id"],
                    kind=event["type"],
                    document=json.dumps(event),
                    queue="payments",
                    actor="settle_stripe_event",
                )
            ],
        )
        rows.append(row)
    return rows


async def depth_of(settings, queue: str) -> QueueDepth:
    probe = QueueProbe(settings.require_broker_url(), settings.queue_prefix)
    try:
        return (await probe.depths([queue]))[0]
    finally:
        await probe.close()


async def test_every_metric_in_alerts_and_dashboard_is_exported(settings, spawn, db) -> None:
    ingress_port, worker_port, scheduler_port = free_port(), free_port(), free_port()
    ingress_metrics_port = free_port()
    spawn(
        "ingress",
        ["ingress"],
        colmena_env(
            settings,
            COLMENA_HTTP_PORT=str(ingress_port),
            COLMENA_INGRESS_METRICS_PORT=str(ingress_metrics_port),
        ),
    )
    worker = spawn(
        "worker",
        ["worker", "--queues", "payments", "--processes", "1", "--threads", "2"],
        colmena_env(settings, COLMENA_METRICS_PORT=str(worker_port), COLMENA_MAX_RETRIES="1"),
    )
    spawn(
        "scheduler",
        ["scheduler"],
        colmena_env(settings, COLMENA_SCHEDULER_METRICS_PORT=str(scheduler_port)),
    )
    worker_url = f"http://127.0.0.1:{worker_port}/"
    await wait_for(lambda: scrape(worker_url), timeout=60, interval=0.2)

    # One message settles a payment; one fails, is retried once, then dead-lettered.
    await publish(
        settings, [*await stripe_events(db, 1), message("settle_stripe_event", "not-an-inbox-id")]
    )

    async def worker_saw_everything() -> str | None:
        text = await scrape(worker_url)
        return text if text and value(text, "dramatiq_message_rejects_total") == 1 else None

    worker_text = await wait_for(worker_saw_everything, timeout=60, interval=0.2)
    assert value(worker_text, "dramatiq_messages_total", actor_name="settle_stripe_event") == 3, (
        worker.output()
    )
    ingress_text = await wait_for(
        lambda: scrape(f"http://127.0.0.1:{ingress_metrics_port}/metrics"),
        timeout=60,
        interval=0.2,
    )
    scheduler_text = await wait_for(
        lambda: scrape(f"http://127.0.0.1:{scheduler_port}/"), timeout=60, interval=0.2
    )

    # The ingress read RabbitMQ at scrape time: the dead letter, and the worker consuming payments.
    assert value(ingress_text, "colmena_queue_depth", queue="payments", kind="dead") == 1
    assert value(ingress_text, "colmena_queue_depth", queue="payments", kind="ready") == 0
    assert value(ingress_text, "colmena_queue_consumers", queue="payments") == 1
    assert value(ingress_text, "colmena_queue_depth", queue="stamping", kind="dead") == 0
    assert "colmena_csd_days_left" in exported_names(scheduler_text)

    exported = (
        exported_names(ingress_text) | exported_names(worker_text) | exported_names(scheduler_text)
    )
    used = referenced_metrics()
    assert {
        "colmena_queue_depth",
        "colmena_outbox_oldest_pending_age_seconds",
        "dramatiq_messages_total",
    } <= set(used)
    missing = {
        name: sorted(where) for name, where in used.items() if not is_exported(name, exported)
    }
    assert missing == {}


async def test_two_worker_processes_share_a_queue_and_process_each_message_once(
    settings, spawn, db, tmp_path
) -> None:
    count = 60
    ports = [free_port(), free_port()]
    for index, port in enumerate(ports):
        spawn(
            f"worker{index}",
            ["worker", "--queues", "payments", "--processes", "1", "--threads", "1"],
            colmena_env(
                settings,
                COLMENA_METRICS_PORT=str(port),
                COLMENA_DATA_DIR=str(tmp_path / f"worker{index}"),
            ),
        )

    async def both_consuming() -> bool:
        return (await depth_of(settings, "payments")).consumers == 2

    await wait_for(both_consuming, timeout=60, interval=0.2)

    await publish(settings, await stripe_events(db, count))
    await wait_for(
        lambda: db.fetchval(
            "SELECT count(*) = $1 FROM inbox WHERE processed_at IS NOT NULL", count
        ),
        timeout=90,
    )

    async def processed_per_worker() -> list[float] | None:
        texts = [await scrape(f"http://127.0.0.1:{port}/") for port in ports]
        counts = [
            value(text or "", "dramatiq_messages_total", actor_name="settle_stripe_event") or 0
            for text in texts
        ]
        return counts if sum(counts) == count else None

    per_worker = await wait_for(processed_per_worker, timeout=30, interval=0.2)
    assert all(processed > 0 for processed in per_worker), per_worker
    assert await db.fetchval("SELECT count(*) FROM payments WHERE status = 'approved'") == count
    assert await db.fetchval("SELECT count(*) FROM payment_events") == count
    assert await db.fetchval("SELECT count(DISTINCT payment_id) FROM payment_events") == count
    depth = await depth_of(settings, "payments")
    assert (depth.ready, depth.delayed, depth.dead) == (0, 0, 0)


def put_raw(settings, queue: str, target: str, count: int) -> None:
    """Put `count` Dramatiq messages straight into `target` (a name from queue_declarations of
    `queue`)."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.require_broker_url()))
    try:
        channel = connection.channel()
        for name, arguments in queue_declarations(settings.queue_prefix + queue, quorum=False):
            channel.queue_declare(queue=name, durable=True, arguments=arguments)
        for _ in range(count):
            body = json.dumps(
                {
                    "queue_name": settings.queue_prefix + queue,
                    "actor_name": "x",
                    "args": [],
                    "kwargs": {},
                    "options": {},
                    "message_id": str(uuid.uuid4()),
                    "message_timestamp": 0,
                }
            )
            channel.basic_publish(exchange="", routing_key=target, body=body.encode())
    finally:
        connection.close()


async def run_status(settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "colmena", "status", *args],
        env=colmena_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_status_reports_what_the_system_holds(settings, start_worker, db) -> None:
    await publish(
        settings, [message("deliver_license", 900 + n, queue="licenses") for n in range(3)]
    )
    dead = settings.queue_prefix + "stamping.XQ"
    await asyncio.to_thread(put_raw, settings, "stamping", dead, 1)
    await asyncio.to_thread(put_raw, settings, "payments", settings.queue_prefix + "payments.DQ", 2)
    for n in range(2):
        await outbox.record(db, queue="licenses", actor="deliver_license", args=[n])
    await db.execute("UPDATE outbox SET created_at = now() - interval '90 seconds'")
    await db.execute(
        "INSERT INTO rates (source, pair, value, effective_date, status, reason) "
        "VALUES ('bcv', 'USD/VES', 36.5, current_date, 'accepted', 'test'), "
        "('bcv', 'USD/VES', 99, current_date, 'suspect', 'test')"
    )
    await db.execute(
        "INSERT INTO tenants (id, email, plan, token_sha256) VALUES "
        "('acme', 'a@example.com', 'pro', sha256('a')), "
        "('zeta', 'z@example.com', 'free', sha256('z'))"
    )
    await db.execute(
        "INSERT INTO bots (tenant_id, config, desired, observed, healthy, crashloop) VALUES "
        "('acme', '{}', 'running', 'running', true, false), "
        "('zeta', '{}', 'running', 'crashloop', null, true)"
    )
    start_worker(queues=["rates"])

    async def rates_consumed() -> bool:
        return (await depth_of(settings, "rates")).consumers == 1

    await wait_for(rates_consumed)

    result = await run_status(settings, "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["queues"]["licenses"] == {"ready": 3, "delayed": 0, "dead": 0, "consumers": 0}
    assert status["queues"]["stamping"] == {"ready": 0, "delayed": 0, "dead": 1, "consumers": 0}
    assert status["queues"]["payments"] == {"ready": 0, "delayed": 2, "dead": 0, "consumers": 0}
    assert status["queues"]["rates"]["consumers"] == 1
    assert status["queues"]["bots"] == {"ready": 0, "delayed": 0, "dead": 0, "consumers": 0}
    assert status["dead_letters"] == 1
    assert status["outbox"]["pending"] == 2
    assert 90 <= status["outbox"]["oldest_age_s"] < 150
    rates = [
        (rate["source"], rate["pair"], rate["value"], rate["status"], rate["source_stale"])
        for rate in status["rates"]
    ]
    assert rates == [("bcv", "USD/VES", "36.5", "accepted", False)]
    assert status["bots"] == {"crashloop": 1, "running": 1}

    screen = await run_status(settings)
    assert screen.returncode == 0, screen.stderr
    assert re.search(r"^licenses\s+3\s+0\s+0\s+0$", screen.stdout, re.MULTILINE), screen.stdout
    assert "dead letters: 1  (colmena dlq list)" in screen.stdout
    assert "outbox: 2 pending, oldest" in screen.stdout
    assert "bots: crashloop 1, running 1" in screen.stdout


async def test_status_without_rabbitmq_still_reports_the_database(settings, db) -> None:
    await outbox.record(db, queue="payments", actor="settle_stripe_event", args=[1])
    result = await run_status(
        settings, "--json", COLMENA_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    )
    assert result.returncode == 1
    status = json.loads(result.stdout)
    assert status["queues"] is None and status["dead_letters"] is None
    assert status["broker_error"]
    assert status["outbox"]["pending"] == 1
