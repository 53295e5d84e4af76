"""The chaos run beyond one machine (`bench/chaos.py --distributed`).

colmena runs as it would on three VMs: a three-node RabbitMQ cluster of this run's own with
quorum queues, a PostgreSQL primary with a synchronous streaming standby, and two ingress hosts,
two worker hosts and a scheduler host, each in a network namespace of its own with its own data
directory, reaching the cluster over veth links (nothing on localhost, nothing shared on disk).
While providers send signed webhooks at a steady rate, through either ingress like a load
balancer would, the run SIGKILLs a RabbitMQ node (then restarts it), SIGKILLs the PostgreSQL
primary and promotes the standby, and SIGKILLs an ingress host and a worker host (then starts
them again, as a VM's restart policy would). It then checks what the single-machine run checks.

Before the faults, the same burst of payments goes through this cluster and through one
single-node system on the machine's own RabbitMQ and PostgreSQL, so the two throughputs come
from the same run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bench.chaos import (
    MAX_BACKOFF_MS,
    METADATA,
    QUEUES,
    SECRET,
    BrokerNodes,
    ChaosReport,
    Webhook,
    build_webhooks,
    drain,
    running_system,
    send_all,
    verify,
    wait_http,
)
from bench.cluster.hosts import Host, Hosts
from bench.cluster.postgres import PostgresPair
from bench.cluster.rabbitmq import RabbitCluster
from bench.standins.smtp import SmtpSink
from colmena.domain.licensing import generate_key_pair
from colmena.gateways import sample_events as events
from colmena.gateways.stripe import sign
from colmena.store.migrate import apply_migrations

HTTP_PORT = 8080  # every host has its own network namespace, so every host uses the defaults


@dataclass
class HostProcesses:
    """colmena's processes, one host (network namespace) each, restarted like a VM's units."""

    hosts: Hosts
    env: dict[str, str]
    workdir: Path
    by_host: dict[str, tuple[Host, list[str]]] = field(default_factory=dict)
    _started: int = 0

    def add(self, name: str, *command: str) -> Host:
        host = self.hosts.add(name)
        # Each host's own data directory and its own copy of the read-only product content.
        shutil.copytree(self.workdir / "products", self.workdir / name / "products")
        self.by_host[name] = (host, list(command))
        self.start(name)
        return host

    def start(self, name: str) -> None:
        host, command = self.by_host[name]
        self._started += 1
        log = (self.workdir / "logs" / f"{self._started:03d}-{name}.log").open("wb")
        host.popen(
            [sys.executable, "-m", "colmena", *command],
            env={
                **self.env,
                "COLMENA_HTTP_HOST": host.ip,
                "COLMENA_DATA_DIR": str(self.workdir / name / "data"),
                "COLMENA_LICENSE_PRODUCTS_DIR": str(self.workdir / name / "products"),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill(self, name: str) -> None:
        """SIGKILL every process of the host, as when its VM dies."""
        self.by_host[name][0].kill()

    def stop(self) -> None:
        for host, _command in self.by_host.values():
            host.stop()


@dataclass
class DistributedSystem:
    webhook_urls: list[str]
    prefix: str
    rabbit: RabbitCluster
    postgres: PostgresPair
    processes: HostProcesses
    smtp: SmtpSink


@asynccontextmanager
async def distributed_system(*, log_dir: Path | None = None) -> AsyncIterator[DistributedSystem]:
    prefix = f"dist{uuid.uuid4().hex[:6]}_"
    workdir = Path(tempfile.mkdtemp(prefix="colmena-distributed-"))
    logs = log_dir or workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    product = workdir / "products" / "colmena-enterprise"
    product.mkdir(parents=True)
    (product / "README.txt").write_text("Colmena Enterprise\n")
    with (
        Hosts(prefix="cd") as hosts,
        RabbitCluster(workdir / "rabbitmq", nodes=3, bind=hosts.bridge_ip) as rabbit,
        PostgresPair(workdir / "postgres", bind=hosts.bridge_ip) as postgres,
        SmtpSink() as smtp,
    ):
        conn = await asyncpg.connect(postgres.url)
        await apply_migrations(conn)
        await conn.close()
        smtp_port = hosts.forward(smtp.port)
        env = {key: value for key, value in os.environ.items() if not key.startswith("COLMENA_")}
        env.update(
            {
                "COLMENA_DATABASE_URL": postgres.url,
                "COLMENA_BROKER_URL": ",".join(rabbit.urls),
                "COLMENA_QUORUM_QUEUES": "true",
                "COLMENA_QUEUE_PREFIX": prefix,
                "COLMENA_STRIPE_WEBHOOK_SECRETS": SECRET,
                "COLMENA_RATE_LIMIT_PRESET": "off",
                "COLMENA_MIN_BACKOFF_MS": "200",
                "COLMENA_MAX_BACKOFF_MS": str(MAX_BACKOFF_MS),
                "COLMENA_MAX_RETRIES": "20",
                "COLMENA_RELAY_INTERVAL_S": "1",
                "COLMENA_RELAY_GRACE_S": "3",
                "COLMENA_DB_POOL_MAX": "20",
                "COLMENA_LOG_LEVEL": "WARNING",
                "COLMENA_LICENSE_SIGNING_KEY": generate_key_pair().private_pem,
                "COLMENA_SMTP_HOST": hosts.bridge_ip,
                "COLMENA_SMTP_PORT": str(smtp_port),
                "COLMENA_SMTP_STARTTLS": "false",
                # A worker host killed mid-send holds its email this long; retries outlast it.
                "COLMENA_SMTP_TIMEOUT_S": "2",
                "COLMENA_LICENSE_SEND_LEASE_S": "8",
            }
        )
        processes = HostProcesses(hosts, env, workdir)
        worker = ("worker", "--queues", ",".join(QUEUES), "--processes", "1", "--threads", "4")
        ingresses = [processes.add(f"ingress-{i}", "ingress") for i in (1, 2)]
        for i in (1, 2):
            processes.add(f"worker-{i}", *worker)
        processes.add("scheduler", "scheduler")
        try:
            for host in ingresses:
                await wait_http(f"http://{host.ip}:{HTTP_PORT}/readyz", timeout_s=90)
            yield DistributedSystem(
                [f"http://{host.ip}:{HTTP_PORT}/webhooks/stripe" for host in ingresses],
                prefix,
                rabbit,
                postgres,
                processes,
                smtp,
            )
        finally:
            processes.stop()


def fresh_payments(count: int) -> list[Webhook]:
    """`count` signed successes of payments no other phase of the run has seen."""
    webhooks = []
    for index in range(count):
        intent = events.payment_intent(
            amount=5_000 + index, metadata=METADATA, email=f"burst{index}@example.com"
        )
        event = events.stripe_event("payment_intent.succeeded", intent, created=int(time.time()))
        body = json.dumps(event)
        webhooks.append(
            Webhook(
                intent["id"],
                "payment_intent.succeeded",
                body.encode(),
                sign(body, SECRET),
                event["id"],
            )
        )
    return webhooks


async def burst_throughput(urls: Sequence[str], smtp: SmtpSink, payments: int) -> float:
    """Payments per second, from the first webhook to the last license email SMTP accepted,
    for `payments` fresh payments sent as fast as 16 clients go."""
    expected = smtp.received + payments
    started = time.monotonic()
    await send_all(urls, fresh_payments(payments), 10_000.0, 16, ChaosReport())
    await smtp.wait_for_async(expected, timeout=300)
    return payments / (time.monotonic() - started)


async def run_distributed(
    *,
    events_count: int,
    rate: float,
    clients: int = 8,
    seed: int | None = None,
    drain_timeout_s: float = 300.0,
    throughput_payments: int = 0,
    log_dir: Path | None = None,
) -> tuple[ChaosReport, dict[str, float]]:
    rng = random.Random(seed)
    report = ChaosReport()
    throughput: dict[str, float] = {}
    webhooks, expected = build_webhooks(events_count, rng)
    report.offered = len(webhooks)
    if throughput_payments:
        async with running_system(worker_count=2, database_via_proxy=False) as single:
            throughput["single node"] = await burst_throughput(
                [single.webhook_url], single.smtp, throughput_payments
            )
    async with distributed_system(log_dir=log_dir) as system:
        if throughput_payments:
            throughput["cluster"] = await burst_throughput(
                system.webhook_urls, system.smtp, throughput_payments
            )
        duration = report.offered / rate
        processes = system.processes

        async def at(fraction: float) -> None:
            await asyncio.sleep(max(0.0, started + duration * fraction - time.monotonic()))

        async def faults() -> None:
            await at(0.15)
            system.rabbit.kill(0)
            report.faults.append("rabbitmq node 1 SIGKILLed")
            await at(0.35)
            await asyncio.to_thread(system.rabbit.start, 0)
            report.faults.append("rabbitmq node 1 restarted")
            await at(0.45)
            system.postgres.kill_primary()
            await asyncio.to_thread(system.postgres.promote_standby)
            report.faults.append("postgresql primary SIGKILLed, standby promoted")
            await at(0.6)
            processes.kill("ingress-1")
            report.faults.append("ingress host 1 SIGKILLed")
            await at(0.7)
            processes.kill("worker-1")
            report.worker_kills += 1
            report.faults.append("worker host 1 SIGKILLed")
            await at(0.8)
            processes.start("ingress-1")
            processes.start("worker-1")
            report.faults.append("ingress host 1 and worker host 1 started again")

        started = time.monotonic()
        faulting = asyncio.create_task(faults())
        accepted = await send_all(system.webhook_urls, webhooks, rate, clients, report)
        await faulting
        db = await asyncpg.connect(system.postgres.url)
        try:
            drain_started = time.monotonic()
            deadline = drain_started + drain_timeout_s
            broker = BrokerNodes(tuple(system.rabbit.urls), quorum=True)
            report.drain_seconds = await drain(db, system.prefix, deadline, broker) - drain_started
            await verify(db, accepted, expected, report, system.prefix, system.smtp, broker)
        finally:
            await db.close()
    return report, throughput
