"""What "an ingress 2xx means the row is on both nodes" costs: one-row commits on a lone
PostgreSQL server vs a primary whose synchronous standby must flush each commit first.

Both are started by this run, from the same binaries and settings, on this machine's disk
(bench/cluster/postgres.py); the standby is on loopback, so the figures hold the standby's own
fsync and the WAL round trip but no network latency: between hosts add one round trip per
commit. Each client is one connection committing one-row INSERTs back to back (autocommit, as
the ingress stores a webhook); both setups run at each client count, alternating, in one run.

    python bench/pg_sync_cost.py [--seconds 5] [--clients 1,4,16]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.cluster.postgres import PostgresPair, PostgresSingle  # noqa: E402
from bench.common import exit_on_sigterm, figure, machine, median, percentile  # noqa: E402

WARM_UP_S = 1.0


@dataclass
class Run:
    latencies_us: list[float]
    seconds: float

    @property
    def rate(self) -> float:
        return len(self.latencies_us) / self.seconds


async def commits(url: str, clients: int, seconds: float) -> Run:
    """`clients` connections inserting one row per commit for `seconds` (after a warm-up)."""
    connections = [await asyncpg.connect(url) for _ in range(clients)]
    await connections[0].execute(
        "CREATE TABLE IF NOT EXISTS bench_commits (id bigserial PRIMARY KEY, payload text)"
    )
    latencies: list[float] = []

    async def client(conn: asyncpg.Connection, until: float, record: bool) -> None:
        while time.perf_counter() < until:
            started = time.perf_counter()
            await conn.execute("INSERT INTO bench_commits (payload) VALUES ($1)", "webhook")
            if record:
                latencies.append((time.perf_counter() - started) * 1_000_000)

    try:
        warm = time.perf_counter() + WARM_UP_S
        await asyncio.gather(*(client(conn, warm, False) for conn in connections))
        started = time.perf_counter()
        until = started + seconds
        await asyncio.gather(*(client(conn, until, True) for conn in connections))
        return Run(latencies, time.perf_counter() - started)
    finally:
        for conn in connections:
            await conn.close()


def report(clients: int, single: Run, pair: Run) -> None:
    label = f"{clients} client{'s' if clients > 1 else ''}"
    for name, pct in (("p50", 50), ("p99", 99)):
        figure(
            f"commit {name}, {label}, synchronous standby",
            percentile(pair.latencies_us, pct),
            "µs",
            baseline=percentile(single.latencies_us, pct),
            baseline_name="single node",
        )
    figure(
        f"commits/s, {label}, synchronous standby",
        pair.rate,
        "commits/s",
        baseline=single.rate,
        baseline_name="single node",
    )


async def measure(single_url: str, pair_url: str, client_counts: list[int], seconds: float) -> None:
    for clients in client_counts:
        single = await commits(single_url, clients, seconds)
        pair = await commits(pair_url, clients, seconds)
        print(
            f"{clients} clients: single node median {median(single.latencies_us):.0f} µs, "
            f"pair median {median(pair.latencies_us):.0f} µs",
            flush=True,
        )
        report(clients, single, pair)


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per setup")
    parser.add_argument("--clients", default="1,4,16", help="client counts, comma-separated")
    args = parser.parse_args()
    client_counts = [int(count) for count in args.clients.split(",")]
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="colmena-pg-sync-") as base:
        with PostgresSingle(Path(base) / "single") as single, PostgresPair(Path(base)) as pair:
            print(
                f"started: single node {single.boot_seconds:.1f} s, pair {pair.boot_seconds:.1f} s"
            )
            asyncio.run(measure(single.url, pair.primary_url, client_counts, args.seconds))


if __name__ == "__main__":
    main()
