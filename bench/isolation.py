"""Tenant isolation, measured: tenant B's latency alone, then while tenant A floods the ingress.

One real `colmena ingress` process (its own scratch database and queue prefix, per-client rate
limits off so only the per-tenant bounds act) serves two tenants. Phase 1: B alone sends
`--rounds` rounds of bot status, log read and a command, one at a time. Phase 2: A opens 50
log streams and `--connections` concurrent loops hammer every tenant route with A's token while
B repeats phase 1. Printed: B's p50/p99 for both phases and the ratio, and how many of A's
requests got 429 (by error code). A's flood runs in a process of its own, so B's client never
waits on A's event loop. No worker runs: the bench marks commands done itself.

    python bench/isolation.py [--rounds 100] [--connections 64] [--max-seconds 120]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
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

from bench.common import (  # noqa: E402
    AMQP_URL,
    delete_queues,
    figure,
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


async def wait_ready(url: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


async def calm_rounds(
    base: str, token: str, tenant_id: str, conn: asyncpg.Connection, rounds: int
) -> tuple[list[float], Counter[int]]:
    """B's latencies (status, logs, a command per round, one at a time) and its statuses."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    async with aiohttp.ClientSession(headers=bearer(token)) as session:
        for _ in range(rounds):
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

    await asyncio.gather(*(hammer(index) for index in range(connections)))
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
            calm_rounds(base, token, tenant_id, conn, args.rounds), args.max_seconds
        )
    finally:
        flooder.stdin.write(b"stop\n")
        await flooder.stdin.drain()
        report = await asyncio.wait_for(flooder.stdout.read(), args.max_seconds)
        await flooder.wait()
    return latencies, statuses, Counter(json.loads(report.decode().strip().splitlines()[-1]))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=100, help="B's rounds per phase")
    parser.add_argument("--connections", type=int, default=64, help="A's concurrent loops")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="the flood's limit")
    parser.add_argument("--max-flood-requests", type=int, default=200_000)
    parser.add_argument("--flood", nargs=2, metavar=("BASE", "TOKEN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        base, token = args.flood
        await flood(base, token, args.connections, args.max_seconds, args.max_flood_requests)
        return
    print(
        f"machine: {machine()}; B rounds per phase: {args.rounds} (3 requests each); "
        f"A: {STREAMS} streams + {args.connections} connections"
    )

    prefix = f"bench{uuid.uuid4().hex[:6]}_"
    async with scratch_database() as database_url:
        conn = await connect(database_url)
        _, args.flood_token = await add_tenant(conn, "a")
        calm_id, calm_token = await add_tenant(conn, "b")
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
                "COLMENA_KEY_SEAL_PUBLIC_KEY": encode_key(public_key_of(generate_private_key())),
            }
        )
        ingress = subprocess.Popen(
            [sys.executable, "-m", "colmena", "ingress"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            await wait_ready(base + "/healthz")
            await calm_rounds(base, calm_token, calm_id, conn, 10)  # warm-up
            alone, alone_statuses = await calm_rounds(base, calm_token, calm_id, conn, args.rounds)

            flooded, flooded_statuses, outcomes = await flooded_rounds(
                base, calm_token, calm_id, conn, args
            )
        finally:
            ingress.terminate()
            ingress.wait()
            await conn.close()
            delete_queues(prefix)

    print(f"B alone: statuses {dict(alone_statuses)}; B during A's flood: {dict(flooded_statuses)}")
    print(f"A's outcomes: {dict(sorted(outcomes.items()))}")
    refused = sum(count for key, count in outcomes.items() if key.startswith(("429", "stream 429")))
    figure("A's requests answered", sum(outcomes.values()), "requests")
    figure("A's requests refused with 429", refused, "requests")
    for pct in (50, 99):
        before = percentile(alone, pct) * 1000
        during = percentile(flooded, pct) * 1000
        figure(f"B p{pct} alone", before, "ms")
        figure(f"B p{pct} while A floods", during, "ms", baseline=before, baseline_name="B alone")
    if set(flooded_statuses) - {200, 202}:
        raise SystemExit(f"B was refused while A flooded: {dict(flooded_statuses)}")


if __name__ == "__main__":
    asyncio.run(main())
