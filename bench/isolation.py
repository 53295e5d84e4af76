"""Tenant isolation, measured: tenant B's latency alone, then while tenant A floods the ingress.

One real `colmena ingress` process (its own scratch database and queue prefix, per-client rate
limits off so only the per-tenant bounds act) serves two tenants from two client addresses (A
from 127.0.0.1, B from 127.0.0.2). B sends a round (bot status, log read, a command, one at a
time) every `--interval` seconds for `--seconds`: alone first, then while A opens 50 log
streams and `--connections` concurrent loops hammer every tenant route with A's token. The
flood runs twice, on a fresh ingress each: with refusals answered at once
(COLMENA_REFUSAL_DELAY_S=0, the baseline) and held back `--refusal-delay` seconds (the
default). Printed: B's p50/p99 alone and under each flood with ratios, A's requests per second
and how many got 429 (by error code). A's flood runs in a process of its own, so B's client
never waits on A's event loop. No worker runs: the bench marks B's commands done itself.

    python bench/isolation.py [--seconds 20] [--interval 0.1] [--connections 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.chaos import wait_http  # noqa: E402
from bench.common import (  # noqa: E402
    AMQP_URL,
    delete_queues,
    figure,
    free_port,
    machine,
    percentile,
    scratch_database,
)
from colmena.domain.key_sealing import encode_key, generate_private_key, public_key_of  # noqa: E402
from colmena.domain.tenants import DEFAULT_CONFIG, new_token, token_digest  # noqa: E402
from colmena.store import bot_logs  # noqa: E402
from colmena.store import tenants as store  # noqa: E402
from colmena.store.pool import connect  # noqa: E402

STREAMS = 50
CALM_ADDRESS = "127.0.0.2"  # all of 127/8 is loopback on Linux: B is a client of its own
FLOOD_ROUTES = [
    ("GET", "/api/v1/bot/status", None),
    ("GET", "/api/v1/bot/config", None),
    ("GET", "/api/v1/bot/logs", None),
    ("POST", "/api/v1/bot/restart", None),
    ("GET", f"/api/v1/commands/{uuid.uuid4()}", None),
    ("GET", "/api/v1/keys", None),
    ("POST", "/api/v1/keys", {"provider": "binance", "key": "sk-bench-0123456789"}),
    ("DELETE", "/api/v1/keys/bitso", None),
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def add_tenant(conn: asyncpg.Connection, name: str) -> tuple[str, str]:
    """A tenant whose bot wants to run and has logged a line (so its streams stay open)."""
    tenant_id, token = f"bench-{name}-{uuid.uuid4().hex[:6]}", new_token()
    await store.create_tenant(
        conn,
        tenant_id=tenant_id,
        email=f"{tenant_id}@example.com",
        plan="free",
        token_sha256=token_digest(token),
        config=dict(DEFAULT_CONFIG),
    )
    await store.set_desired(conn, tenant_id, "running", reset_restarts=True)
    await bot_logs.append(conn, tenant_id, 1, [(datetime.now(UTC), "bench line")])
    return tenant_id, token


async def calm_rounds(
    base: str, token: str, tenant_id: str, conn: asyncpg.Connection, args: argparse.Namespace
) -> tuple[list[float], Counter[int]]:
    """B's latencies (a round every `args.interval` for `args.seconds`) and its statuses."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(local_addr=(CALM_ADDRESS, 0))
    async with aiohttp.ClientSession(connector=connector, headers=bearer(token)) as session:
        rounds = max(1, round(args.seconds / args.interval))
        started_at = time.perf_counter()
        for index in range(rounds):
            for method, path in (
                ("GET", "/api/v1/bot/status"),
                ("GET", "/api/v1/bot/logs"),
                ("POST", "/api/v1/bot/restart"),
            ):
                started = time.perf_counter()
                async with session.request(method, base + path) as response:
                    await response.read()
                latencies.append(time.perf_counter() - started)
                statuses[response.status] += 1
            # The bots worker's part (none runs here): B's command is done.
            await conn.execute(
                "UPDATE bot_commands SET status = 'done', finished_at = now() "
                "WHERE tenant_id = $1 AND status = 'queued'",
                tenant_id,
            )
            # Paced, not closed loop: B is a tenant going about its day, not a second flood.
            next_round = started_at + (index + 1) * args.interval
            await asyncio.sleep(max(0.0, next_round - time.perf_counter()))
    return latencies, statuses


async def flood(base: str, token: str, connections: int, seconds: float, max_requests: int) -> None:
    """The flood process: A's 50 streams, then `connections` loops over every tenant route until
    a line on stdin (or `seconds`, or `max_requests`); prints `ready`, then A's outcomes."""
    stop = asyncio.Event()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), headers=bearer(token))
    outcomes: Counter[str] = Counter()
    streams = list(
        await asyncio.gather(
            *(session.get(base + "/api/v1/bot/logs/stream") for _ in range(STREAMS))
        )
    )
    for response in streams:
        outcomes[f"stream {response.status}"] += 1
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), stop.set)
    loop.call_later(seconds, stop.set)
    print("ready", flush=True)

    async def hammer(offset: int) -> None:
        turn = offset
        while not stop.is_set() and sum(outcomes.values()) < max_requests:
            method, path, body = FLOOD_ROUTES[turn % len(FLOOD_ROUTES)]
            turn += 1
            async with session.request(method, base + path, json=body) as response:
                document = await response.json(content_type=None)
            if response.status == 429:
                outcomes[f"429 {document['error']['code']}"] += 1
            else:
                outcomes[str(response.status)] += 1

    flood_started = time.perf_counter()
    await asyncio.gather(*(hammer(index) for index in range(connections)))
    outcomes["seconds"] = round(time.perf_counter() - flood_started)
    for response in streams:
        response.close()
    await session.close()
    print(json.dumps(outcomes), flush=True)


async def flooded_rounds(
    base: str, token: str, tenant_id: str, conn: asyncpg.Connection, args: argparse.Namespace
) -> tuple[list[float], Counter[int], Counter[str]]:
    """B's rounds while the flood process runs; (latencies, B's statuses, A's outcomes)."""
    flooder = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--flood",
        base,
        args.flood_token,
        "--connections",
        str(args.connections),
        "--max-seconds",
        str(args.max_seconds),
        "--max-flood-requests",
        str(args.max_flood_requests),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    if flooder.stdin is None or flooder.stdout is None:
        raise RuntimeError("the flood process has no pipes")
    try:
        ready = await asyncio.wait_for(flooder.stdout.readline(), args.max_seconds)
        if ready.strip() != b"ready":
            raise RuntimeError(f"the flood process did not start: {ready!r}")
        latencies, statuses = await asyncio.wait_for(
            calm_rounds(base, token, tenant_id, conn, args), args.max_seconds
        )
    finally:
        flooder.stdin.write(b"stop\n")
        await flooder.stdin.drain()
        report = await asyncio.wait_for(flooder.stdout.read(), args.max_seconds)
        await flooder.wait()
    return latencies, statuses, Counter(json.loads(report.decode().strip().splitlines()[-1]))


class Ingress:
    """One `colmena ingress` process on the bench's database, for one phase."""

    def __init__(self, database_url: str, prefix: str, refusal_delay_s: float) -> None:
        port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith("COLMENA_")}
        env.update(
            {
                "COLMENA_DATABASE_URL": database_url,
                "COLMENA_BROKER_URL": AMQP_URL,
                "COLMENA_HTTP_PORT": str(port),
                "COLMENA_INGRESS_METRICS_PORT": str(free_port()),
                "COLMENA_LOG_LEVEL": "WARNING",
                "COLMENA_QUEUE_PREFIX": prefix,
                "COLMENA_RATE_LIMIT_PRESET": "off",
                "COLMENA_REFUSAL_DELAY_S": str(refusal_delay_s),
                "COLMENA_KEY_SEAL_PUBLIC_KEY": encode_key(public_key_of(generate_private_key())),
            }
        )
        self.base = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "colmena", "ingress"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


async def measured_phases(
    database_url: str, prefix: str, args: argparse.Namespace
) -> dict[str, tuple[list[float], Counter[int], Counter[str]]]:
    """Phase name -> (B's latencies, B's statuses, A's outcomes)."""
    conn = await connect(database_url)
    _, args.flood_token = await add_tenant(conn, "a")
    calm_id, calm_token = await add_tenant(conn, "b")
    phases: dict[str, tuple[list[float], Counter[int], Counter[str]]] = {}
    try:
        for name, delay in (
            ("alone", args.refusal_delay),
            ("A floods, refusals at once", 0.0),
            (f"A floods, refusals held {args.refusal_delay:g} s", args.refusal_delay),
        ):
            ingress = Ingress(database_url, prefix, delay)
            try:
                await wait_http(ingress.base + "/healthz")
                warm_up = argparse.Namespace(seconds=1.0, interval=0.05)
                await calm_rounds(ingress.base, calm_token, calm_id, conn, warm_up)
                if name == "alone":
                    latencies, statuses = await calm_rounds(
                        ingress.base, calm_token, calm_id, conn, args
                    )
                    phases[name] = (latencies, statuses, Counter())
                else:
                    phases[name] = await flooded_rounds(
                        ingress.base, calm_token, calm_id, conn, args
                    )
            finally:
                ingress.stop()
    finally:
        await conn.close()
    return phases


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="B's time per phase")
    parser.add_argument("--interval", type=float, default=0.1, help="B's seconds between rounds")
    parser.add_argument("--connections", type=int, default=64, help="A's concurrent loops")
    parser.add_argument("--refusal-delay", type=float, default=1.0, help="the held phase's delay")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="the flood's limit")
    parser.add_argument("--max-flood-requests", type=int, default=2_000_000)
    parser.add_argument("--flood", nargs=2, metavar=("BASE", "TOKEN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        base, token = args.flood
        await flood(base, token, args.connections, args.max_seconds, args.max_flood_requests)
        return
    print(
        f"machine: {machine()}; B: a round of 3 requests every {args.interval:g} s for "
        f"{args.seconds:g} s per phase; A: {STREAMS} streams + {args.connections} connections"
    )
    prefix = f"bench{uuid.uuid4().hex[:6]}_"
    async with scratch_database() as database_url:
        try:
            phases = await measured_phases(database_url, prefix, args)
        finally:
            delete_queues(prefix)

    alone = phases.pop("alone")[0]
    for pct in (50, 99):
        figure(f"B p{pct} alone", percentile(alone, pct) * 1000, "ms")
    for name, (latencies, statuses, outcomes) in phases.items():
        seconds = outcomes.pop("seconds", 0) or float("nan")
        refused = sum(n for key, n in outcomes.items() if key.startswith(("429", "stream 429")))
        print(f"{name}: B's statuses {dict(statuses)}; A's {dict(sorted(outcomes.items()))}")
        figure(f"{name}: A's requests per second", sum(outcomes.values()) / seconds, "req/s")
        figure(f"{name}: A's requests refused with 429", refused, "requests")
        for pct in (50, 99):
            before = percentile(alone, pct) * 1000
            during = percentile(latencies, pct) * 1000
            figure(f"{name}: B p{pct}", during, "ms", baseline=before, baseline_name="B alone")
        if set(statuses) - {200, 202}:
            raise SystemExit(f"B was refused while A flooded ({name}): {dict(statuses)}")


if __name__ == "__main__":
    asyncio.run(main())
