"""Stripe webhooks through one `colmena ingress` process, beside a bare verify-and-parse handler.

Both servers run as separate processes on this machine and get the same pre-signed events from
the same client: first as fast as they take them (closed loop, `--concurrency` in flight), then
at a fixed offered rate (open loop) for latency. colmena's figure includes the inbox + outbox
commit in PostgreSQL and the publish to RabbitMQ. Each server's CPU per webhook (from /proc) is
printed too: it is what one process costs, and other load on a shared machine moves it less than
the rates. Last, PostgreSQL's own limit: one-row INSERTs, each its own commit, from as many
asyncpg connections as `--concurrency`, in the same scratch database; the ingress's rate is
given against it as well.

    python bench/webhooks.py [--events 3000] [--concurrency 32] [--rate 300]
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
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.common import (  # noqa: E402
    AMQP_URL,
    delete_queues,
    figure,
    free_port,
    machine,
    percentile,
    scratch_database,
)
from colmena.gateways import sample_events as events  # noqa: E402
from colmena.gateways.stripe import sign  # noqa: E402

SECRET = "whsec_bench"


def signed_events(count: int) -> list[tuple[bytes, str]]:
    out = []
    for _ in range(count):
        body = json.dumps(events.stripe_event("payment_intent.succeeded", events.payment_intent()))
        out.append((body.encode(), sign(body, SECRET)))
    return out


async def wait_ready(url: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url):
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


async def post(session: aiohttp.ClientSession, url: str, body: bytes, signature: str) -> float:
    started = time.perf_counter()
    async with session.post(
        url, data=body, headers={"Content-Type": "application/json", "Stripe-Signature": signature}
    ) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")
    return time.perf_counter() - started


async def saturate(url: str, payloads: list[tuple[bytes, str]], concurrency: int) -> float:
    queue = list(reversed(payloads))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while queue:
                body, signature = queue.pop()
                await post(session, url, body, signature)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(payloads) / (time.perf_counter() - started)


async def fixed_rate(url: str, payloads: list[tuple[bytes, str]], rate: float) -> list[float]:
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        tasks = []
        for index, (body, signature) in enumerate(payloads):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(session, url, body, signature)))
        return list(await asyncio.gather(*tasks))


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    url: str, server: subprocess.Popen[bytes], args: argparse.Namespace
) -> tuple[float, float, list[float]]:
    """Webhooks/s, the server's CPU seconds per webhook meanwhile (what a process costs, which
    other load on the machine moves less than the rate), and latencies at the offered rate."""
    await wait_ready(url)
    await saturate(url, signed_events(200), args.concurrency)
    payloads = signed_events(args.events)
    cpu_before = cpu_seconds(server.pid)
    throughput = await saturate(url, payloads, args.concurrency)
    cpu_per_webhook = (cpu_seconds(server.pid) - cpu_before) / args.events
    latencies = await fixed_rate(url, signed_events(int(args.rate * 5)), args.rate)
    return throughput, cpu_per_webhook, latencies


async def raw_commits(database_url: str, commits: int, concurrency: int) -> float:
    """One-row commits per second: `commits` INSERTs, each alone in its transaction, shared out
    over `concurrency` connections that each send their next one when the last is committed."""
    setup = await asyncpg.connect(database_url)
    await setup.execute("CREATE TABLE bench_raw_commits (id bigserial PRIMARY KEY, body text)")
    await setup.close()
    connections = [await asyncpg.connect(database_url) for _ in range(concurrency)]
    left = iter(range(commits))
    body = json.dumps({"id": "evt_raw", "type": "payment_intent.succeeded"})

    async def client(conn: asyncpg.Connection) -> None:
        for _ in left:
            await conn.execute("INSERT INTO bench_raw_commits (body) VALUES ($1)", body)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(client(conn) for conn in connections))
        return commits / (time.perf_counter() - started)
    finally:
        for conn in connections:
            await conn.close()


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--rate", type=float, default=300.0, help="offered webhooks/s for the latency run"
    )
    args = parser.parse_args()
    print(
        f"machine: {machine()}; events: {args.events}; concurrency: {args.concurrency}; "
        f"offered rate: {args.rate}/s"
    )

    bare_port = free_port()
    bare = start(
        [sys.executable, str(Path(__file__).parent / "bare_webhook.py"), str(bare_port), SECRET],
        dict(os.environ),
    )
    try:
        bare_rate, bare_cpu, bare_latency = await measure(
            f"http://127.0.0.1:{bare_port}/webhooks/stripe", bare, args
        )
    finally:
        bare.terminate()
        bare.wait()

    prefix = f"bench{uuid.uuid4().hex[:6]}_"
    async with scratch_database() as database_url:
        port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith("COLMENA_")}
        env.update(
            {
                "COLMENA_DATABASE_URL": database_url,
                "COLMENA_BROKER_URL": AMQP_URL,
                "COLMENA_HTTP_PORT": str(port),
                "COLMENA_STRIPE_WEBHOOK_SECRETS": SECRET,
                "COLMENA_LOG_LEVEL": "WARNING",
                "COLMENA_QUEUE_PREFIX": prefix,
                "COLMENA_RATE_LIMIT_PRESET": "off",
            }
        )
        ingress = start([sys.executable, "-m", "colmena", "ingress"], env)
        try:
            rate, cpu, latency = await measure(
                f"http://127.0.0.1:{port}/webhooks/stripe", ingress, args
            )
        finally:
            ingress.terminate()
            ingress.wait()
            delete_queues(prefix)
        raw_rate = await raw_commits(database_url, args.events, args.concurrency)

    figure("bare verify+parse handler", bare_rate, "webhooks/s")
    figure(
        "colmena ingress (verify, inbox+outbox commit, publish)",
        rate,
        "webhooks/s",
        baseline=bare_rate,
        baseline_name="bare handler",
    )
    figure(f"raw one-row PostgreSQL commits, {args.concurrency} clients", raw_rate, "commits/s")
    figure(
        "colmena ingress against raw one-row commits",
        rate,
        "webhooks/s",
        baseline=raw_rate,
        baseline_name="raw commits",
    )
    figure("bare handler CPU per webhook", bare_cpu * 1e6, "us")
    figure(
        "colmena ingress CPU per webhook",
        cpu * 1e6,
        "us",
        baseline=bare_cpu * 1e6,
        baseline_name="bare handler",
    )
    for name, values in (("bare", bare_latency), ("colmena", latency)):
        figure(f"{name} p50 at {args.rate:.0f}/s offered", percentile(values, 50) * 1000, "ms")
        figure(f"{name} p99 at {args.rate:.0f}/s offered", percentile(values, 99) * 1000, "ms")


if __name__ == "__main__":
    asyncio.run(main())
