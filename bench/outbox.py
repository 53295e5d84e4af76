"""Relay publish rate (pipelined confirms) against Dramatiq's `actor.send()` one by one.

Both publish the same number of messages to RabbitMQ with publisher confirms, on this machine,
in this run. The relay figure includes its database work (claim rows, mark them published).

    python bench/outbox.py [--messages 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

import dramatiq

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.common import AMQP_URL, delete_queues, figure, machine, scratch_database  # noqa: E402
from colmena.config.logging import configure_logging  # noqa: E402
from colmena.runtime.broker import ColmenaRabbitmqBroker  # noqa: E402
from colmena.runtime.outbox import relay_until_empty  # noqa: E402
from colmena.runtime.publisher import AmqpPublisher  # noqa: E402
from colmena.store.pool import create_pool  # noqa: E402


def one_by_one(prefix: str, messages: int) -> float:
    broker = ColmenaRabbitmqBroker(url=AMQP_URL, confirm_delivery=True)

    @dramatiq.actor(broker=broker, queue_name=prefix + "bench", actor_name="bench_noop")
    def noop(index: int) -> None:
        return None

    noop.send(-1)
    started = time.perf_counter()
    for index in range(messages):
        noop.send(index)
    elapsed = time.perf_counter() - started
    broker.close()
    return messages / elapsed


async def relay(prefix: str, messages: int) -> float:
    async with scratch_database() as url:
        pool = await create_pool(url, max_size=4)
        await pool.executemany(
            "INSERT INTO outbox (message_id, queue, actor, args) "
            "VALUES ($1, 'bench', 'bench_noop', $2)",
            [(uuid.uuid4(), [index]) for index in range(messages)],
        )
        publisher = AmqpPublisher(AMQP_URL, prefix)
        await publisher.check()
        started = time.perf_counter()
        sent = await relay_until_empty(pool, publisher, grace_s=0, batch=500)
        elapsed = time.perf_counter() - started
        await publisher.close()
        await pool.close()
        assert sent == messages, (sent, messages)
        return messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    configure_logging(dev=True, level="WARNING")  # the figures are the output
    prefix = f"bench{uuid.uuid4().hex[:6]}_"
    print(f"machine: {machine()}; messages: {args.messages}")
    try:
        baseline = one_by_one(prefix, args.messages)
        figure("dramatiq actor.send() one by one, confirms", baseline, "msg/s")
        rate = asyncio.run(relay(prefix, args.messages))
        figure(
            "outbox relay, pipelined confirms",
            rate,
            "msg/s",
            baseline=baseline,
            baseline_name="actor.send() one by one",
        )
    finally:
        delete_queues(prefix, ("bench",))


if __name__ == "__main__":
    main()
