"""The no-op workload of bench/workers.py: plain Dramatiq, Celery, and colmena's own worker stack.

Each task only counts itself in a Redis counter, so the bench can tell exactly when every
message has been processed. How it counts is `BENCH_COUNTER_MODE`:
- `batched` (the default): the same function in all three counts in memory and a thread of
  the process adds the count to Redis every 10 ms, so the counter costs all three the same
  (next to nothing) and the figure is the worker stack's own;
- `redis`: one INCR per message, with the blocking client from Celery's and Dramatiq's worker
  threads and with redis.asyncio from colmena's `async def` actor (a blocking call would stall
  its event loop). redis.asyncio spends several times the blocking client's CPU per call, so
  this mode charges colmena more for the same counter.

colmena's actor is an `async def` registered as colmena's actors are. A worker process imports
this module (Dramatiq's CLI as `bench.worker_apps`, Celery's as `bench.worker_apps:app`);
`BENCH_FRAMEWORK` says which app it builds.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio

if TYPE_CHECKING:
    import dramatiq

    from colmena.runtime.resources import Resources

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
QUEUE = os.environ.get("BENCH_QUEUE", "bench_noop")
COUNTER = os.environ.get("BENCH_COUNTER", "bench:noop")
BATCHED = os.environ.get("BENCH_COUNTER_MODE", "batched") == "batched"
FLUSH_S = 0.01
# colmena's queue is one of its domain queues under a prefix of the bench's own, so that
# `colmena worker`'s own start-up (which refuses unknown queues) starts it.
COLMENA_QUEUE = "payments"
ACTOR = "noop"
_redis = redis.Redis(host="127.0.0.1", port=6379)
_aredis = redis.asyncio.Redis(host="127.0.0.1", port=6379)


class _BatchedCounter:
    """Counts in memory; a daemon thread, started by the first count (in the worker process,
    after any fork), adds the count to COUNTER every FLUSH_S."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = 0
        self._flusher: threading.Thread | None = None

    def incr(self) -> None:
        with self._lock:
            self._pending += 1
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_forever, daemon=True)
                self._flusher.start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_S)
            with self._lock:
                pending, self._pending = self._pending, 0
            if pending:
                _redis.incrby(COUNTER, pending)


_batched = _BatchedCounter()


def count() -> None:
    if BATCHED:
        _batched.incr()
    else:
        _redis.incr(COUNTER)


async def count_async(_resources: Resources) -> None:
    if BATCHED:
        _batched.incr()
    else:
        await _aredis.incr(COUNTER)


def dramatiq_broker(queue: str = QUEUE) -> dramatiq.Broker:
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=AMQP_URL)
    dramatiq.set_broker(broker)
    dramatiq.actor(queue_name=queue, actor_name=ACTOR)(count)
    return broker


def celery_app(queue: str = QUEUE) -> Any:
    from celery import Celery

    app = Celery("bench", broker=AMQP_URL)
    app.conf.task_default_queue = queue
    app.conf.task_ignore_result = True
    app.conf.worker_prefetch_multiplier = 2
    app.task(name=ACTOR)(count)
    return app


def colmena_broker() -> dramatiq.Broker:
    """What `colmena.actors.boot` builds, with the no-op actor in place of colmena's actors."""
    from colmena.config import load_settings
    from colmena.config.logging import configure_logging
    from colmena.runtime.broker import build_broker
    from colmena.runtime.registry import ActorSpec
    from colmena.runtime.startup import amqp_resources

    settings = load_settings()
    configure_logging(dev=settings.env == "dev", level=settings.log_level)
    return build_broker(
        settings,
        amqp_resources(settings),
        [ActorSpec(fn=count_async, name=ACTOR, queue=COLMENA_QUEUE)],
        broker_url=settings.broker_urls(),
        metrics=True,
        quorum=settings.quorum_queues,
    )


if os.environ.get("BENCH_FRAMEWORK") == "dramatiq":
    broker = dramatiq_broker()
elif os.environ.get("BENCH_FRAMEWORK") == "celery":
    app = celery_app()
elif os.environ.get("BENCH_FRAMEWORK", "").startswith("colmena"):
    broker = colmena_broker()
