"""Relay publish rate (pipelined confirms) against Dramatiq's `actor.send()` one by one.

Both publish the same number of messages to RabbitMQ with publisher confirms, on this machine,
in this run. The relay figure includes its database work (claim rows, mark them published).
The one-by-one rate follows the machine's load (it is latency-bound, the relay is not), so the
two alternate for `--rounds` rounds and each figure is the median of its rounds.

    python bench/outbox.py [--messages 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import dramatiq

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.common import (  # noqa: E402
    AMQP_URL,
    delete_queues,
    figure,
    machine,
    median,
    scratch_database,
)
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


async def relay(pool: asyncpg.Pool, publisher: AmqpPublisher, messages: int) -> float:
    await pool.executemany(
        "INSERT INTO outbox (message_id, queue, actor, args) "
        "VALUES ($1, 'bench', 'bench_noop', $2)",
        [(uuid.uuid4(), [index]) for index in range(messages)],
    )
    started = time.perf_counter()
    sent = await relay_until_empty(pool, publisher, grace_s=0, batch=500)
    elapsed = time.perf_counter() - started
    assert sent == messages, (sent, messages)
    return messages / elapsed


async def alternate(prefix: str, messages: int, rounds: int) -> tuple[list[float], list[float]]:
    """(one-by-one rates, relay rates), one of each per round, taken in turn."""
    baseline: list[float] = []
    relayed: list[float] = []
    async with scratch_database() as url:
        pool = await create_pool(url, max_size=4)
        publisher = AmqpPublisher(AMQP_URL, prefix)
        try:
            await publisher.check()
            for _ in range(rounds):
                baseline.append(await asyncio.to_thread(one_by_one, prefix, messages))
                relayed.append(await relay(pool, publisher, messages))
        finally:
            await publisher.close()
            await pool.close()
    return baseline, relayed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging(dev=True, level="WARNING")  # the figures are the output
    prefix = f"bench{uuid.uuid4().hex[:6]}_"
    print(f"machine: {machine()}; messages: {args.messages}; rounds: {args.rounds}")
    try:
        baseline, relayed = asyncio.run(alternate(prefix, args.messages, args.rounds))
    finally:
        delete_queues(prefix, ("bench",))
    for index, (one, many) in enumerate(zip(baseline, relayed, strict=True), 1):
        print(
            f"round {index}: one by one {one:.0f} msg/s, relay {many:.0f} msg/s, x{many / one:.2f}"
        )
    figure("dramatiq actor.send() one by one, confirms", median(baseline), "msg/s")
    figure(
        "outbox relay, pipelined confirms",
        median(relayed),
        "msg/s",
        baseline=median(baseline),
        baseline_name="actor.send() one by one",
    )


if __name__ == "__main__":
    main()
