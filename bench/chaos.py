"""Chaos run: signed webhooks under worker kills, a RabbitMQ outage and a PostgreSQL outage.

Real `colmena ingress`, `colmena scheduler` and 2+ `colmena worker` processes on the real
RabbitMQ and PostgreSQL. Both are reached through TCP proxies this script cuts for a few
seconds: every connection drops and new ones are refused, as when the server dies. That touches
nothing but this run's own connections, so it is safe on a machine others share, and it is the
default. `--rabbit-fault restart` instead restarts the broker itself (`rabbitmqctl
stop_app/start_app`): every client of that RabbitMQ loses its connections, so use it only on a
broker of your own. Several clients send N webhooks for N/2 payments (about 20% exact
duplicates, refunds before or after their success, shuffled) and, like providers, retry
anything not answered 2xx. After the system drains, the run checks what the promise says:
nothing accepted is lost, every payment has the state its events imply, exactly one live
license per approved-and-not-refunded payment, no duplicate follow-ups, no dead letters.

    python bench/chaos.py [--events 10000] [--rate 150] [--workers 2] [--json-report FILE]

With `--distributed` the run goes beyond one machine (bench/distributed.py): a three-node
RabbitMQ cluster with quorum queues, a PostgreSQL primary with a synchronous standby, and
ingress and worker hosts in network namespaces of their own, while a RabbitMQ node, the
PostgreSQL primary, an ingress host and a worker host are SIGKILLed:

    python bench/chaos.py --distributed [--events 5000] [--rate 100] [--throughput-payments 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pika

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.common import (  # noqa: E402
    AMQP_URL,
    delete_queues,
    exit_on_sigterm,
    figure,
    free_port,
    machine,
    scratch_database,
)
from bench.standins.smtp import SmtpSink  # noqa: E402
from bench.standins.tcp_proxy import TcpProxy  # noqa: E402
from colmena.domain.licensing import generate_key_pair  # noqa: E402
from colmena.gateways import sample_events as events  # noqa: E402
from colmena.gateways.stripe import sign  # noqa: E402
from colmena.runtime.queues import queue_declarations  # noqa: E402

SECRET = "whsec_chaos"
QUEUES = ("payments", "licenses")
MAX_BACKOFF_MS = 5000  # the workers' longest wait before a retry
QUIET_S = MAX_BACKOFF_MS / 1000 + 1.0  # drained: no change for longer than that
RABBIT_FAULTS = ("proxy", "restart")
METADATA = {
    "product": "colmena-enterprise",
    "product_kind": "license",
    "edition": "enterprise",
    "seats": "1",
    "locale": "es-MX",
}


@dataclass
class Webhook:
    payment: str
    kind: str
    body: bytes
    signature: str
    event_id: str


@dataclass
class ChaosReport:
    offered: int = 0
    accepted: int = 0
    attempts: int = 0
    status_counts: Counter[int] = field(default_factory=Counter)
    connection_errors: int = 0
    send_seconds: float = 0.0
    drain_seconds: float = 0.0
    lost: int = 0
    wrong_state: int = 0
    missing_licenses: int = 0
    live_licenses_for_refunded: int = 0
    duplicate_licenses: int = 0
    duplicate_follow_ups: int = 0
    dead_letters: int = 0
    emails_sent: int = 0
    emails_received: int = 0
    worker_kills: int = 0
    faults: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        checks = {
            "lost": self.lost,
            "wrong_state": self.wrong_state,
            "missing_licenses": self.missing_licenses,
            "live_licenses_for_refunded": self.live_licenses_for_refunded,
            "duplicate_licenses": self.duplicate_licenses,
            "duplicate_follow_ups": self.duplicate_follow_ups,
            "dead_letters": self.dead_letters,
            "not accepted": self.offered - self.accepted,
        }
        return [f"{name}={value}" for name, value in checks.items() if value]

    def as_json(self) -> str:
        """Every field, for a caller that runs this script as a process (tests/test_chaos.py)."""
        values = {item.name: getattr(self, item.name) for item in fields(self)}
        values["status_counts"] = {str(status): n for status, n in self.status_counts.items()}
        return json.dumps(values, indent=2)


def build_webhooks(count: int, rng: random.Random) -> tuple[list[Webhook], dict[str, str]]:
    """N webhooks for N/2 payments: successes, ~30% refunds, ~20% exact duplicates, shuffled."""
    payments = max(1, count // 2)
    originals: list[Webhook] = []
    expected: dict[str, str] = {}
    base = int(time.time())
    for index in range(payments):
        intent = events.payment_intent(
            amount=10_000 + index, metadata=METADATA, email=f"c{index}@example.com"
        )
        created = base - 3600 + index
        kinds = [
            (
                "payment_intent.succeeded",
                events.stripe_event("payment_intent.succeeded", intent, created=created),
            )
        ]
        if rng.random() < 0.3:
            refund = events.charge(payment_intent_id=intent["id"], amount=intent["amount"])
            kinds.append(
                (
                    "charge.refunded",
                    events.stripe_event("charge.refunded", refund, created=created + 60),
                )
            )
        expected[intent["id"]] = "refunded" if len(kinds) == 2 else "approved"
        for kind, event in kinds:
            body = json.dumps(event)
            originals.append(
                Webhook(intent["id"], kind, body.encode(), sign(body, SECRET), event["id"])
            )
    duplicates_wanted = max(0, count - len(originals))
    duplicates = [rng.choice(originals) for _ in range(duplicates_wanted)]
    webhooks = originals + duplicates
    rng.shuffle(webhooks)
    return webhooks[:count] if len(webhooks) > count else webhooks, expected


class Processes:
    """colmena processes of this run; workers are killed with SIGKILL and replaced."""

    def __init__(self, env: dict[str, str], log_dir: Path, worker_count: int) -> None:
        self.env = env
        self.log_dir = log_dir
        self.worker_count = worker_count
        self.workers: list[subprocess.Popen[bytes]] = []
        self.worker_metrics_ports: list[int] = []  # the workers', in the same order
        self.others: list[subprocess.Popen[bytes]] = []
        self._started = 0

    def _spawn(
        self, name: str, *args: str, extra: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        self._started += 1
        log = (self.log_dir / f"{self._started:03d}-{name}.log").open("wb")
        return subprocess.Popen(
            [sys.executable, "-m", "colmena", *args],
            env={**self.env, **(extra or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_worker(self) -> None:
        # A data directory of its own: each worker's metrics endpoint then counts that worker
        # alone (a shared multiprocess directory would sum them all, on every endpoint).
        data_dir = Path(self.env["COLMENA_DATA_DIR"], f"worker-{self._started + 1}")
        metrics_port = free_port()
        self.worker_metrics_ports.append(metrics_port)
        self.workers.append(
            self._spawn(
                "worker",
                "worker",
                "--queues",
                ",".join(QUEUES),
                "--processes",
                "1",
                "--threads",
                "4",
                extra={
                    "COLMENA_METRICS_PORT": str(metrics_port),
                    "COLMENA_DATA_DIR": str(data_dir),
                },
            )
        )

    def start(self) -> None:
        self.others.append(self._spawn("ingress", "ingress"))
        self.others.append(self._spawn("scheduler", "scheduler"))
        for _ in range(self.worker_count):
            self.start_worker()

    def kill_random_worker(self, rng: random.Random) -> None:
        index = rng.randrange(len(self.workers))
        victim = self.workers.pop(index)
        self.worker_metrics_ports.pop(index)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        self.start_worker()

    def stop(self) -> None:
        for process in self.workers + self.others:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.workers + self.others:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


async def send_all(
    urls: Sequence[str], webhooks: list[Webhook], rate: float, clients: int, report: ChaosReport
) -> set[str]:
    """Send like a provider: paced, concurrent, retrying until 2xx (bounded). With several
    ingress URLs, each client starts on its own and moves to the next on a connection error or
    a 5xx, as a load balancer that health-checks its backends would."""
    accepted: set[str] = set()
    queue: asyncio.Queue[tuple[int, Webhook]] = asyncio.Queue()
    for index, webhook in enumerate(webhooks):
        queue.put_nowait((index, webhook))
    started = time.monotonic()

    async def client(number: int) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        target = number % len(urls)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not queue.empty():
                index, webhook = queue.get_nowait()
                delay = started + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                for attempt in range(60):
                    report.attempts += 1
                    try:
                        async with session.post(
                            urls[target],
                            data=webhook.body,
                            headers={
                                "Content-Type": "application/json",
                                "Stripe-Signature": webhook.signature,
                            },
                        ) as response:
                            await response.read()
                            report.status_counts[response.status] += 1
                            if 200 <= response.status < 300:
                                accepted.add(webhook.event_id)
                                report.accepted += 1
                                break
                            if response.status >= 500:
                                target = (target + 1) % len(urls)
                    except (TimeoutError, aiohttp.ClientError, OSError):
                        report.connection_errors += 1
                        target = (target + 1) % len(urls)
                    await asyncio.sleep(min(2.0, 0.1 * 2 ** min(attempt, 5)))

    await asyncio.gather(*(client(number) for number in range(clients)))
    report.send_seconds = time.monotonic() - started
    return accepted


@dataclass(frozen=True)
class BrokerNodes:
    """Where a run's queues live: the machine's RabbitMQ, or the nodes of a cluster."""

    urls: tuple[str, ...] = (AMQP_URL,)
    quorum: bool = False


MACHINE_BROKER = BrokerNodes()


def queue_depths(prefix: str, broker: BrokerNodes = MACHINE_BROKER) -> tuple[int, int]:
    """(ready or delayed messages, dead letters) over the run's queues."""
    connection = pika.BlockingConnection([pika.URLParameters(url) for url in broker.urls])
    try:
        channel = connection.channel()
        pending = dead = 0
        for queue in QUEUES:
            for index, (name, arguments) in enumerate(
                queue_declarations(prefix + queue, quorum=broker.quorum)
            ):
                count = channel.queue_declare(
                    queue=name, durable=True, arguments=arguments
                ).method.message_count
                if index < 2:
                    pending += count
                else:
                    dead += count
        return pending, dead
    finally:
        connection.close()


async def restart_rabbitmq() -> None:
    for command in (
        ["rabbitmqctl", "-q", "stop_app"],
        ["rabbitmqctl", "-q", "start_app"],
        ["rabbitmqctl", "-q", "await_startup"],
    ):
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        if await process.wait() != 0:
            raise RuntimeError(f"{' '.join(command)} failed")


# What the workers' last effects changed: a message a worker still holds (unacknowledged, so not
# in any queue's count) changes one of these when it finishes.
_EFFECTS = """
SELECT (SELECT count(*) FROM licenses),
       (SELECT count(*) FROM licenses WHERE revoked_at IS NOT NULL),
       (SELECT count(*) FROM license_emails WHERE sent_at IS NOT NULL),
       (SELECT coalesce(max(updated_at), 'epoch') FROM payments),
       (SELECT count(*) FROM outbox)
"""


async def settled(
    db: asyncpg.Connection, prefix: str, broker: BrokerNodes = MACHINE_BROKER
) -> tuple[object, ...] | None:
    """The effects so far when nothing is waiting anywhere (inbox, outbox, emails, queues), else
    None. Queue counts leave out the messages workers hold, so quiet once is not drained."""
    unprocessed = await db.fetchval("SELECT count(*) FROM inbox WHERE processed_at IS NULL")
    unpublished = await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    unsent = await db.fetchval(
        "SELECT count(*) FROM license_emails WHERE sent_at IS NULL AND superseded_at IS NULL"
    )
    pending, _dead = await asyncio.to_thread(queue_depths, prefix, broker)
    if unprocessed or unpublished or unsent or pending:
        return None
    return tuple(await db.fetchrow(_EFFECTS))


async def drain(
    db: asyncpg.Connection, prefix: str, deadline: float, broker: BrokerNodes = MACHINE_BROKER
) -> float:
    """Until nothing has waited anywhere, with the same effects, for longer than a retry's
    longest backoff, or the deadline passes. A retried message waits out its backoff in a
    worker's memory, unacknowledged, where no queue count sees it; within that window it runs
    and changes the effects. Returns when the last change was seen (the drain's end)."""
    quiet: tuple[object, ...] | None = None
    quiet_since = time.monotonic()
    while time.monotonic() <= deadline:
        now = await settled(db, prefix, broker)
        if now is None or now != quiet:
            quiet, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since > QUIET_S:
            return quiet_since
        await asyncio.sleep(0.5)
    return time.monotonic()


async def verify(
    db: asyncpg.Connection,
    accepted: set[str],
    expected: dict[str, str],
    report: ChaosReport,
    prefix: str,
    smtp: SmtpSink,
    broker: BrokerNodes = MACHINE_BROKER,
) -> None:
    stored = {
        row["event_key"]
        for row in await db.fetch("SELECT event_key FROM inbox WHERE provider = 'stripe'")
    }
    report.lost = len(accepted - stored)
    states = {
        row["provider_payment_id"]: row["status"]
        for row in await db.fetch("SELECT provider_payment_id, status FROM payments")
    }
    report.wrong_state = sum(
        1 for payment, state in expected.items() if states.get(payment) != state
    )
    licenses = await db.fetch(
        "SELECT p.provider_payment_id, count(l.id) AS n, "
        "count(l.id) FILTER (WHERE l.revoked_at IS NULL) AS live "
        "FROM payments p LEFT JOIN licenses l ON l.payment_id = p.id "
        "GROUP BY p.provider_payment_id"
    )
    by_payment = {row["provider_payment_id"]: row for row in licenses}
    for payment, state in expected.items():
        row = by_payment.get(payment)
        live = row["live"] if row else 0
        if state == "approved" and live != 1:
            report.missing_licenses += 1
        if state == "refunded" and live:
            report.live_licenses_for_refunded += 1
        if row and row["n"] > 1:
            report.duplicate_licenses += 1
    report.duplicate_follow_ups = await db.fetchval(
        "SELECT count(*) FROM (SELECT actor, args FROM outbox WHERE queue <> 'payments' "
        "GROUP BY actor, args HAVING count(*) > 1) AS repeated"
    )
    report.dead_letters = (await asyncio.to_thread(queue_depths, prefix, broker))[1]
    report.emails_sent = await db.fetchval(
        "SELECT count(*) FROM license_emails WHERE sent_at IS NOT NULL"
    )
    report.emails_received = smtp.received


@dataclass
class RunningSystem:
    """A live colmena (ingress, scheduler, workers) on a scratch database and its own queues."""

    webhook_url: str
    db: asyncpg.Connection
    prefix: str
    processes: Processes
    pg_proxy: TcpProxy
    amqp_proxy: TcpProxy
    smtp: SmtpSink
    ingress_metrics_port: int
    scheduler_metrics_port: int


@asynccontextmanager
async def running_system(
    *,
    worker_count: int,
    log_dir: Path | None = None,
    broker_via_proxy: bool = False,
    database_via_proxy: bool = True,
) -> AsyncIterator[RunningSystem]:
    """Start the processes with licenses configured (local SMTP, product, signing key).

    PostgreSQL is reached through a proxy the caller may cut unless `database_via_proxy` is
    off (capacity runs: the proxy is Python in this process, and would be what is measured);
    RabbitMQ only when asked.
    """
    prefix = f"chaos{uuid.uuid4().hex[:6]}_"
    workdir = Path(tempfile.mkdtemp(prefix="colmena-chaos-"))
    logs = log_dir or workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (workdir / "products" / "colmena-enterprise").mkdir(parents=True)
    (workdir / "products" / "colmena-enterprise" / "README.txt").write_text("Colmena Enterprise\n")
    smtp = SmtpSink()
    smtp.start()
    async with scratch_database() as database_url:
        target = urlsplit(database_url)
        pg_proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
        pg_port = await pg_proxy.start()
        amqp = urlsplit(AMQP_URL)
        amqp_proxy = TcpProxy(amqp.hostname or "127.0.0.1", amqp.port or 5672)
        amqp_port = await amqp_proxy.start()
        broker_url = (
            AMQP_URL.replace(f":{amqp.port}/", f":{amqp_port}/") if broker_via_proxy else AMQP_URL
        )
        http_port = free_port()
        ingress_metrics_port, scheduler_metrics_port = free_port(), free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith("COLMENA_")}
        env.update(
            {
                "COLMENA_DATABASE_URL": (
                    database_url.replace(f":{target.port}/", f":{pg_port}/")
                    if database_via_proxy
                    else database_url
                ),
                "COLMENA_INGRESS_METRICS_PORT": str(ingress_metrics_port),
                "COLMENA_SCHEDULER_METRICS_PORT": str(scheduler_metrics_port),
                "COLMENA_BROKER_URL": broker_url,
                "COLMENA_QUEUE_PREFIX": prefix,
                "COLMENA_HTTP_PORT": str(http_port),
                "COLMENA_DATA_DIR": str(workdir / "data"),
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
                "COLMENA_LICENSE_PRODUCTS_DIR": str(workdir / "products"),
                "COLMENA_SMTP_HOST": smtp.host,
                "COLMENA_SMTP_PORT": str(smtp.port),
                "COLMENA_SMTP_STARTTLS": "false",
                # A worker killed mid-send holds its email this long; retries outlast it.
                "COLMENA_SMTP_TIMEOUT_S": "2",
                "COLMENA_LICENSE_SEND_LEASE_S": "8",
            }
        )
        processes = Processes(env, logs, worker_count)
        processes.start()
        db = await asyncpg.connect(database_url)
        try:
            await wait_http(f"http://127.0.0.1:{http_port}/healthz")
            yield RunningSystem(
                f"http://127.0.0.1:{http_port}/webhooks/stripe",
                db,
                prefix,
                processes,
                pg_proxy,
                amqp_proxy,
                smtp,
                ingress_metrics_port,
                scheduler_metrics_port,
            )
        finally:
            await db.close()
            # In a thread: the proxies run on this loop, and the processes' graceful stop
            # (closing their pools) goes through them.
            await asyncio.to_thread(processes.stop)
            await pg_proxy.cut()
            await amqp_proxy.cut()
            smtp.stop()
            delete_queues(prefix)


async def run_chaos(
    *,
    events_count: int,
    rate: float,
    worker_count: int = 2,
    clients: int = 8,
    kill_every_s: float = 5.0,
    rabbit_fault: str = "proxy",
    seed: int | None = None,
    drain_timeout_s: float = 300.0,
    log_dir: Path | None = None,
) -> ChaosReport:
    if rabbit_fault not in RABBIT_FAULTS:
        raise ValueError(f"rabbit_fault must be one of {', '.join(RABBIT_FAULTS)}")
    rng = random.Random(seed)
    report = ChaosReport()
    webhooks, expected = build_webhooks(events_count, rng)
    report.offered = len(webhooks)
    async with running_system(
        worker_count=worker_count, log_dir=log_dir, broker_via_proxy=rabbit_fault == "proxy"
    ) as system:
        duration = report.offered / rate

        async def faults() -> None:
            await asyncio.sleep(duration * 0.3)
            if rabbit_fault == "proxy":
                await system.amqp_proxy.cut()
                await asyncio.sleep(3)
                await system.amqp_proxy.restore()
                report.faults.append("rabbitmq cut behind a proxy for 3 s")
            else:
                await restart_rabbitmq()
                report.faults.append("rabbitmq restarted (stop_app/start_app)")
            await asyncio.sleep(duration * 0.3)
            await system.pg_proxy.cut()
            await asyncio.sleep(3)
            await system.pg_proxy.restore()
            report.faults.append("postgresql refused connections for 3 s")

        async def killer(stop: asyncio.Event) -> None:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), kill_every_s)
                except TimeoutError:
                    system.processes.kill_random_worker(rng)
                    report.worker_kills += 1

        stop = asyncio.Event()
        killing = asyncio.create_task(killer(stop))
        faulting = asyncio.create_task(faults())
        accepted = await send_all([system.webhook_url], webhooks, rate, clients, report)
        await faulting
        stop.set()
        await killing
        drain_started = time.monotonic()
        deadline = drain_started + drain_timeout_s
        report.drain_seconds = await drain(system.db, system.prefix, deadline) - drain_started
        await verify(system.db, accepted, expected, report, system.prefix, system.smtp)
    return report


async def wait_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.25)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


def print_report(report: ChaosReport) -> None:
    print(f"faults: {'; '.join(report.faults)}; worker SIGKILLs: {report.worker_kills}")
    figure("offered webhooks", report.offered / report.send_seconds, "webhooks/s")
    figure("accepted webhooks", report.accepted / report.send_seconds, "webhooks/s")
    print(
        f"responses: {dict(sorted(report.status_counts.items()))}; "
        f"connection errors: {report.connection_errors}; attempts: {report.attempts}"
    )
    server_errors = sum(n for s, n in report.status_counts.items() if s >= 500)
    print(f"5xx: {server_errors}, 503: {report.status_counts.get(503, 0)}")
    figure("drain time", report.drain_seconds, "s")
    print(f"lost = {report.lost}")
    print(f"duplicates = {report.duplicate_licenses + report.duplicate_follow_ups}")
    print(
        f"wrong payment states = {report.wrong_state}; "
        f"missing licenses = {report.missing_licenses}; "
        f"live licenses for refunded payments = {report.live_licenses_for_refunded}; "
        f"dead letters = {report.dead_letters}"
    )
    print(
        f"license emails marked sent = {report.emails_sent}; "
        f"received by SMTP = {report.emails_received} "
        "(SMTP is at-least-once: a worker killed after the server accepted sends again)"
    )
    print(
        "RESULT: " + ("ok" if not report.problems() else "FAILED " + ", ".join(report.problems()))
    )


async def run_distributed_from(args: argparse.Namespace) -> ChaosReport:
    """The distributed run, its throughput figures printed before the report."""
    from bench.distributed import run_distributed  # it builds on this module

    report, throughput = await run_distributed(
        events_count=args.events,
        rate=args.rate,
        clients=args.clients,
        seed=args.seed,
        drain_timeout_s=args.drain_timeout,
        throughput_payments=args.throughput_payments,
        log_dir=args.log_dir,
    )
    if throughput:
        figure(
            "burst throughput on the cluster",
            throughput["cluster"],
            "payments/s",
            baseline=throughput["single node"],
            baseline_name="single node, same run",
        )
    return report


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=150.0, help="offered webhooks per second")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--kill-every", type=float, default=5.0, help="seconds between worker SIGKILLs"
    )
    parser.add_argument(
        "--rabbit-fault",
        choices=RABBIT_FAULTS,
        default="proxy",
        help="proxy (default): cut this run's broker connections behind a proxy; restart: "
        "rabbitmqctl stop_app/start_app, which disconnects every client of that broker",
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--drain-timeout", type=float, default=300.0, help="seconds to wait for the system to drain"
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="a RabbitMQ cluster, a PostgreSQL primary and standby, and hosts in network "
        "namespaces, instead of one machine's processes (bench/distributed.py)",
    )
    parser.add_argument(
        "--throughput-payments",
        type=int,
        default=0,
        help="with --distributed: first send this many payments as a burst to the cluster and "
        "to a single-node system, and print both throughputs",
    )
    parser.add_argument("--log-dir", type=Path, help="keep the processes' logs here")
    parser.add_argument("--json-report", type=Path, help="also write the report here, as JSON")
    args = parser.parse_args()
    if args.distributed:
        print(
            f"machine: {machine()}; events: {args.events}; offered rate: {args.rate}/s; "
            "distributed: 3 RabbitMQ nodes, PostgreSQL primary + synchronous standby, "
            "2 ingress hosts, 2 worker hosts, 1 scheduler host"
        )
        report = asyncio.run(run_distributed_from(args))
    else:
        print(
            f"machine: {machine()}; events: {args.events}; offered rate: {args.rate}/s; "
            f"workers: {args.workers}; RabbitMQ fault: {args.rabbit_fault}"
        )
        report = asyncio.run(
            run_chaos(
                events_count=args.events,
                rate=args.rate,
                worker_count=args.workers,
                clients=args.clients,
                kill_every_s=args.kill_every,
                rabbit_fault=args.rabbit_fault,
                seed=args.seed,
                drain_timeout_s=args.drain_timeout,
                log_dir=args.log_dir,
            )
        )
    print_report(report)
    if args.json_report is not None:
        args.json_report.write_text(report.as_json())
    sys.exit(0 if not report.problems() else 1)


if __name__ == "__main__":
    main()
