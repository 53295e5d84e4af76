"""Worker throughput on a no-op task: colmena's own worker stack, plain Dramatiq and Celery, on
the same RabbitMQ in the same run.

- colmena: `colmena worker`'s start-up (`colmena.runtime.startup.worker_command`: Dramatiq's
  CLI running the loop worker) with a boot module that builds colmena's broker and middleware
  (`build_broker`: age and time limits, retries, dead-letter alarm, resources, Prometheus)
  around one `async def` actor registered as colmena's actors are, on a colmena queue under a
  prefix of the run's own.
- colmena-threads: the same broker, actor and environment under Dramatiq's own CLI and worker
  threads (what `colmena worker` ran before the loop worker, and what `colmena dev` runs).
- dramatiq: a bare RabbitmqBroker and a synchronous actor (bench/worker_apps.py).
- celery: a thread pool of the same size.

N messages are enqueued and counted in RabbitMQ first, then one worker process with T threads
drains them; the figure is messages processed per second from the first to the last increment
of a Redis counter (start-up excluded by a warm-up message), and beside it the CPU the worker's
processes spent per message over the same span (steadier than a rate on a shared machine).
`--counter` says how the actors count (bench/worker_apps.py): `batched` (default) costs them
all the same, `redis` is one INCR per message, through redis.asyncio for colmena's async actor.
`--rounds` runs them all in turn that many times and reports each one's median. Every queue a
run declares is deleted afterwards (with its .DQ and .XQ). Celery is only installed for this
bench: `pip install -e ".[bench]"`.

    python bench/workers.py [--messages 20000] [--threads 8] [--rounds 1] [--counter batched]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dramatiq
import pika
import psutil
import redis

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench import worker_apps  # noqa: E402
from bench.common import (  # noqa: E402
    AMQP_URL,
    delete_queues,
    figure,
    free_port,
    machine,
    scratch_database,
)
from colmena.config import Settings  # noqa: E402
from colmena.runtime.queues import queue_declarations  # noqa: E402
from colmena.runtime.startup import worker_command  # noqa: E402

ROOT = Path(__file__).parent.parent
FRAMEWORKS = ("celery", "dramatiq", "colmena", "colmena-threads")


def wait_count(client: redis.Redis, key: str, target: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if int(client.get(key) or 0) >= target:
            return time.monotonic()
        time.sleep(0.01)
    raise RuntimeError(f"{key} did not reach {target} within {timeout_s}s (at {client.get(key)})")


def wait_queued(queue: str, target: int, timeout_s: float = 120) -> None:
    """Until RabbitMQ holds `target` ready messages in `queue`: the worker then starts on a
    full queue, whatever each framework's client left in flight."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        deadline = time.monotonic() + timeout_s
        while channel.queue_declare(queue, passive=True).method.message_count < target:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{queue} did not hold {target} messages within {timeout_s}s")
            connection.sleep(0.05)
    finally:
        connection.close()


def colmena_sender(queue: str) -> Callable[[int], None]:
    """Publishes what colmena's outbox publisher does: Dramatiq-encoded messages on colmena's
    queue (declared with colmena's arguments), persistent."""

    def send(count: int) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        try:
            channel = connection.channel()
            for name, arguments in queue_declarations(queue, quorum=False):
                channel.queue_declare(name, durable=True, arguments=arguments)
            properties = pika.BasicProperties(delivery_mode=2)
            for _ in range(count):
                body = dramatiq.Message(
                    queue_name=queue,
                    actor_name=worker_apps.ACTOR,
                    args=(),
                    kwargs={},
                    options={},
                ).encode()
                channel.basic_publish("", queue, body, properties)
        finally:
            connection.close()

    return send


def colmena_settings(prefix: str, database_url: str, data_dir: Path) -> Settings:
    return Settings(
        database_url=database_url,
        broker_url=AMQP_URL,
        queue_prefix=prefix,
        data_dir=data_dir,
        http_host="127.0.0.1",
        metrics_port=free_port(),
        _env_file=None,
    )


def colmena_env(settings: Settings) -> dict[str, str]:
    return {
        "COLMENA_DATABASE_URL": settings.require_database_url(),
        "COLMENA_BROKER_URL": settings.require_broker_url(),
        "COLMENA_QUEUE_PREFIX": settings.queue_prefix,
        "COLMENA_DATA_DIR": str(settings.data_dir),
        "COLMENA_HTTP_HOST": settings.http_host,
        "COLMENA_METRICS_PORT": str(settings.metrics_port),
    }


@dataclass(frozen=True)
class Run:
    rate: float  # messages per second
    cpu_us: float  # CPU of the worker's processes per message, in microseconds


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process and all its descendants, so far."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def run(framework: str, messages: int, threads: int, database_url: str, counter_mode: str) -> Run:
    tag = uuid.uuid4().hex[:6]
    counter = f"bench:{framework}_{tag}"
    client = redis.Redis(host="127.0.0.1", port=6379)
    client.delete(counter)
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as scratch:
        own = {
            "BENCH_FRAMEWORK": framework,
            "BENCH_COUNTER": counter,
            "BENCH_COUNTER_MODE": counter_mode,
        }
        env = {**os.environ, **own}
        if framework.startswith("colmena"):
            prefix = f"bench_colmena_{tag}_"
            queue = prefix + worker_apps.COLMENA_QUEUE
            settings = colmena_settings(prefix, database_url, Path(scratch, "data"))
            command, env = worker_command(
                settings, [worker_apps.COLMENA_QUEUE], 1, threads, boot="bench.worker_apps"
            )
            env.update(own, **colmena_env(settings))
            if framework == "colmena-threads":  # argv: python -m <worker cli> <boot> ...
                command = [sys.executable, "-m", "dramatiq", *command[3:]]
            send_many = colmena_sender(queue)
            cleanup = (prefix, (worker_apps.COLMENA_QUEUE,))
        elif framework == "dramatiq":
            queue = f"bench_dramatiq_{tag}"
            send = worker_apps.dramatiq_broker(queue).get_actor(worker_apps.ACTOR).send
            command = [sys.executable, "-m", "dramatiq", "bench.worker_apps"]
            command += ["--processes", "1", "--threads", str(threads)]
            send_many = lambda count: [send() for _ in range(count)]  # noqa: E731
            cleanup = ("", (queue,))
        else:
            queue = f"bench_celery_{tag}"
            apply = worker_apps.celery_app(queue).signature(worker_apps.ACTOR).apply_async
            command = [sys.executable, "-m", "celery", "-A", "bench.worker_apps:app", "worker"]
            command += ["--pool", "threads", "--concurrency", str(threads)]
            command += ["--loglevel", "WARNING", "-Q", queue]
            command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
            send_many = lambda count: [apply() for _ in range(count)]  # noqa: E731
            cleanup = ("", (queue,))
        env.update(BENCH_QUEUE=queue, PYTHONPATH=str(ROOT))
        try:
            send_many(messages + 1)
            wait_queued(queue, messages + 1)
            worker = subprocess.Popen(
                command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                started = wait_count(client, counter, 1, 120)
                cpu_started = cpu_seconds(worker.pid)
                finished = wait_count(client, counter, messages + 1, 600)
                cpu = cpu_seconds(worker.pid) - cpu_started
            finally:
                worker.terminate()
                worker.wait(timeout=60)
        finally:
            delete_queues(*cleanup)
            client.delete(counter)
    return Run(rate=messages / (finished - started), cpu_us=cpu / messages * 1e6)


async def measure(
    messages: int, threads: int, rounds: int, counter_mode: str
) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {name: [] for name in FRAMEWORKS}
    async with scratch_database() as database_url:
        for _ in range(rounds):
            for name in FRAMEWORKS:
                result = await asyncio.to_thread(
                    run, name, messages, threads, database_url, counter_mode
                )
                runs[name].append(result)
    return runs


LABELS = {
    "celery": "celery worker, no-op task",
    "dramatiq": "dramatiq worker (bare broker, sync actor), no-op actor",
    "colmena": "colmena worker (its broker, middleware and start-up, async actor), no-op actor",
    "colmena-threads": "colmena's stack on Dramatiq's threads (the worker before), no-op actor",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--counter", choices=("batched", "redis"), default="batched")
    args = parser.parse_args()
    print(
        f"machine: {machine()}; messages: {args.messages}; 1 process x {args.threads} threads; "
        f"rounds: {args.rounds}; counter: {args.counter}"
    )
    runs = asyncio.run(measure(args.messages, args.threads, args.rounds, args.counter))
    for name, results in runs.items():
        shown = ", ".join(f"{r.rate:.0f} msg/s ({r.cpu_us:.0f} us CPU/msg)" for r in results)
        print(f"{name}: {shown}")
    rate = {name: statistics.median(r.rate for r in results) for name, results in runs.items()}
    cpu = {name: statistics.median(r.cpu_us for r in results) for name, results in runs.items()}
    figure(LABELS["celery"], rate["celery"], "msg/s")
    for name in ("dramatiq", "colmena", "colmena-threads"):
        figure(LABELS[name], rate[name], "msg/s", baseline=rate["celery"], baseline_name="celery")
    figure(
        "colmena worker against colmena's stack on Dramatiq's threads",
        rate["colmena"],
        "msg/s",
        baseline=rate["colmena-threads"],
        baseline_name="Dramatiq's threads",
    )
    # CPU of the worker's processes per message: what the rates come to on a busy machine.
    for name in FRAMEWORKS:
        figure(
            f"worker CPU per message: {name}",
            cpu[name],
            "us",
            baseline=None if name == "celery" else cpu["celery"],
            baseline_name="celery",
        )


if __name__ == "__main__":
    main()
