"""Worker throughput on a no-op task: Dramatiq (what colmena runs) beside Celery, same RabbitMQ.

N messages are enqueued first, then one worker process with T threads drains them; the figure is
messages processed per second from worker start to the last increment of a Redis counter
(start-up time excluded by a warm-up message). Celery is only installed for this bench:
`pip install -e ".[bench]"`.

    python bench/workers.py [--messages 20000] [--threads 8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pika
import redis

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench import worker_apps  # noqa: E402
from bench.common import figure, machine  # noqa: E402

ROOT = Path(__file__).parent.parent


def wait_count(client: redis.Redis, key: str, target: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if int(client.get(key) or 0) >= target:
            return time.monotonic()
        time.sleep(0.01)
    raise RuntimeError(f"{key} did not reach {target} within {timeout_s}s (at {client.get(key)})")


def run(framework: str, messages: int, threads: int) -> float:
    queue = f"bench_{framework}_{uuid.uuid4().hex[:6]}"
    counter = f"bench:{queue}"
    env = {
        **os.environ,
        "BENCH_FRAMEWORK": framework,
        "BENCH_QUEUE": queue,
        "BENCH_COUNTER": counter,
        "PYTHONPATH": str(ROOT),
    }
    client = redis.Redis(host="127.0.0.1", port=6379)
    client.delete(counter)
    if framework == "dramatiq":
        broker = worker_apps.dramatiq_broker(queue)
        send = broker.get_actor("noop").send
        command = [
            sys.executable,
            "-m",
            "dramatiq",
            "bench.worker_apps",
            "--processes",
            "1",
            "--threads",
            str(threads),
        ]
    else:
        app = worker_apps.celery_app(queue)
        send = app.signature("noop").apply_async
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.worker_apps:app",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(threads),
            "--loglevel",
            "WARNING",
            "-Q",
            queue,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    send()
    for _ in range(messages):
        send()
    worker = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        started = wait_count(client, counter, 1, 120)
        finished = wait_count(client, counter, messages + 1, 600)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        connection = pika.BlockingConnection(pika.URLParameters(worker_apps.AMQP_URL))
        channel = connection.channel()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(queue=name)
        connection.close()
        client.delete(counter)
    return messages / (finished - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    print(f"machine: {machine()}; messages: {args.messages}; 1 process x {args.threads} threads")
    celery_rate = run("celery", args.messages, args.threads)
    figure("celery worker, no-op task", celery_rate, "msg/s")
    dramatiq_rate = run("dramatiq", args.messages, args.threads)
    figure(
        "dramatiq worker, no-op actor",
        dramatiq_rate,
        "msg/s",
        baseline=celery_rate,
        baseline_name="celery",
    )


if __name__ == "__main__":
    main()
