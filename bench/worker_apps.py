"""The no-op workload of bench/workers.py, once for Dramatiq and once for Celery.

Each task only increments a Redis counter, so both frameworks pay the same per-message cost and
the bench can tell exactly when every message has been processed.
"""

from __future__ import annotations

import os

import redis

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
QUEUE = os.environ.get("BENCH_QUEUE", "bench_noop")
COUNTER = os.environ.get("BENCH_COUNTER", "bench:noop")
_redis = redis.Redis(host="127.0.0.1", port=6379)


def count() -> None:
    _redis.incr(COUNTER)


def dramatiq_broker(queue: str = QUEUE):  # type: ignore[no-untyped-def]
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=AMQP_URL)
    dramatiq.set_broker(broker)
    dramatiq.actor(queue_name=queue, actor_name="noop")(count)
    return broker


def celery_app(queue: str = QUEUE):  # type: ignore[no-untyped-def]
    from celery import Celery

    app = Celery("bench", broker=AMQP_URL)
    app.conf.task_default_queue = queue
    app.conf.task_ignore_result = True
    app.conf.worker_prefetch_multiplier = 2
    app.task(name="noop")(count)
    return app


if os.environ.get("BENCH_FRAMEWORK") == "dramatiq":
    broker = dramatiq_broker()
elif os.environ.get("BENCH_FRAMEWORK") == "celery":
    app = celery_app()
