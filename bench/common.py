"""Shared bench helpers: where the services are, a scratch database, figures printed uniformly."""

from __future__ import annotations

import asyncio
import os
import platform
import random
import signal
import socket
import statistics
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import pika

from colmena.actors import all_actors
from colmena.runtime.queues import DOMAIN_QUEUES, queue_declarations
from colmena.store.migrate import apply_migrations

T = TypeVar("T")

ADMIN_URL = os.environ.get("COLMENA_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
AMQP_URL = os.environ.get(
    "COLMENA_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F?heartbeat=30"
)


class LoopThread:
    """An event loop in a thread of its own, for async servers (TCP forwards, HTTP stand-ins)
    that must keep serving while the calling code blocks or runs loops of its own."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop and return its result (30 s at most)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def close(self) -> None:
        """Let the loop's remaining tasks finish, then stop it and its thread."""

        async def drain() -> None:
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            await asyncio.gather(*others, return_exceptions=True)

        self.run(drain())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that a bench stopped by `kill` or a timeout still leaves
    its `with` blocks: the servers of its own (bench/cluster) are stopped, scratch databases
    dropped, network namespaces removed."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


LOWEST_PORT = 10_000


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody holds right now, below the kernel's ephemeral range: a
    port from that range may become, between this pick and the server's bind, the local port of
    any outgoing connection on the machine (a node of bench/cluster's RabbitMQ once failed to
    start so: `dist_port_already_used`)."""
    ephemeral_low = _ephemeral_ports_start()
    for _ in range(200):
        port = random.randrange(LOWEST_PORT, ephemeral_low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free TCP port from {LOWEST_PORT} to {ephemeral_low}")


def _ephemeral_ports_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            start = int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        start = 32768  # Linux's default
    return max(start, LOWEST_PORT + 1000)


def machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{os.cpu_count()} cores, {memory_gib:.0f} GiB, {python}"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return (
        ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]
        if ordered
        else float("nan")
    )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def figure(
    name: str, value: float, unit: str, *, baseline: float | None = None, baseline_name: str = ""
) -> None:
    """One line per figure, `FIGURE` first so bench/report.py can collect them."""
    ratio = f" ratio={value / baseline:.2f}" if baseline else ""
    base = f" baseline={baseline:.1f} ({baseline_name})" if baseline is not None else ""
    print(f"FIGURE {name}: {value:.1f} {unit}{base}{ratio}", flush=True)


@asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    """A migrated database of the bench's own, dropped afterwards."""
    name = f"colmena_bench_{uuid.uuid4().hex[:10]}"
    base = ADMIN_URL.rpartition("/")[0]
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}"
    conn = await asyncpg.connect(url)
    await apply_migrations(conn)
    await conn.close()
    try:
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def colmena_queues() -> tuple[str, ...]:
    """Every queue colmena may declare: the domains' and each registered actor's."""
    return tuple(sorted(set(DOMAIN_QUEUES) | {spec.queue for spec in all_actors()}))


def delete_queues(prefix: str, queues: tuple[str, ...] | None = None) -> None:
    """Remove a bench run's queues (with their .DQ and .XQ) from RabbitMQ; by default every
    queue colmena may have declared under `prefix`."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        for queue in colmena_queues() if queues is None else queues:
            for name, _ in queue_declarations(prefix + queue, quorum=False):
                channel.queue_delete(queue=name)
    finally:
        connection.close()
