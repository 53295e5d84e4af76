"""Stripe webhooks through one `colmena ingress` process, beside a bare verify-and-parse handler.

Both servers run at once, as separate processes on this machine, and get the same kind of
pre-signed events from the same client: as fast as they take them (closed loop, `--concurrency`
in flight), in `--rounds` pairs of rounds taken in turn (bare first in the first pair, colmena
first in the next, and so on), so a shared host whose speed drifts during the run weighs on both
alike; then at a fixed offered rate (open loop) for latency. colmena's figure includes the
inbox + outbox commit in PostgreSQL and the publish to RabbitMQ. Each server's CPU per webhook
(from /proc) is printed too, with the capacity of one process it gives (1 / CPU per webhook):
what one process costs, which other load on a shared machine moves less than the rates. Last,
PostgreSQL's own limit: one-row INSERTs, each its own commit, from as many asyncpg connections
as `--concurrency`, in the same scratch database; the ingress's rate is given against it too.
Stopped by SIGTERM or Ctrl-C, it stops both servers and drops its database and queues.

    python bench/webhooks.py [--events 5000] [--rounds 3] [--concurrency 32] [--rate 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.common import (  # noqa: E402
    AMQP_URL,
    delete_queues,
    exit_on_sigterm,
    figure,
    free_port,
    machine,
    median,
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
    """Seconds to post every payload, `concurrency` in flight, each sent when one is answered."""
    queue = list(reversed(payloads))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while queue:
                body, signature = queue.pop()
                await post(session, url, body, signature)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


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


@dataclass
class Server:
    """One server under test and what its saturated rounds added up to."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    events: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    client_cpu_seconds: float = 0.0

    async def saturated_round(self, payloads: list[tuple[bytes, str]], concurrency: int) -> float:
        """One closed-loop round; adds its time, the server's CPU and the client's (this
        process's) to the totals, and returns its rate."""
        cpu_before, client_before = cpu_seconds(self.process.pid), time.process_time()
        seconds = await saturate(self.url, payloads, concurrency)
        self.cpu_seconds += cpu_seconds(self.process.pid) - cpu_before
        self.client_cpu_seconds += time.process_time() - client_before
        self.events += len(payloads)
        self.seconds += seconds
        return len(payloads) / seconds

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_per_webhook(self) -> float:
        return self.cpu_seconds / self.events

    def cores(self) -> str:
        """The cores the server and the client kept busy over the rounds: a client near one
        core means the rate is the client's limit, not the server's."""
        return (
            f"{self.name} rounds: server {self.cpu_seconds / self.seconds:.2f} cores, "
            f"client {self.client_cpu_seconds / self.seconds:.2f} cores"
        )


async def saturated_rounds(bare: Server, colmena: Server, args: argparse.Namespace) -> list[float]:
    """`--rounds` pairs of saturated rounds, the pair's order alternating; one line per pair.
    Returns each pair's ratio (colmena's rate over the bare handler's)."""
    for server in (bare, colmena):
        await wait_ready(server.url)
        await saturate(server.url, signed_events(200), args.concurrency)
    ratios = []
    for pair in range(args.rounds):
        order = (bare, colmena) if pair % 2 == 0 else (colmena, bare)
        rates: dict[str, float] = {}
        for server in order:
            rates[server.name] = await server.saturated_round(
                signed_events(args.events), args.concurrency
            )
        print(
            f"round {pair + 1} ({order[0].name} first): bare {rates['bare']:.0f}/s, "
            f"colmena {rates['colmena']:.0f}/s, x{rates['colmena'] / rates['bare']:.2f}",
            flush=True,
        )
        ratios.append(rates["colmena"] / rates["bare"])
    return ratios


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


@contextlib.contextmanager
def started(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A server process for the bench's length, stopped (SIGTERM, then waited for) after."""
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.terminate()
        process.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000, help="events per server per round")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of saturated rounds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--rate", type=float, default=300.0, help="offered webhooks/s for the latency run"
    )
    args = parser.parse_args()
    print(
        f"machine: {machine()}; events per round: {args.events}; rounds: {args.rounds} pairs; "
        f"concurrency: {args.concurrency}; offered rate: {args.rate}/s"
    )
    prefix = f"bench{uuid.uuid4().hex[:6]}_"
    async with scratch_database() as database_url, contextlib.AsyncExitStack() as servers:
        bare_port, port = free_port(), free_port()
        bare = Server(
            "bare",
            f"http://127.0.0.1:{bare_port}/webhooks/stripe",
            servers.enter_context(
                started(
                    [
                        sys.executable,
                        str(Path(__file__).parent / "bare_webhook.py"),
                        str(bare_port),
                        SECRET,
                    ],
                    dict(os.environ),
                )
            ),
        )
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
        servers.callback(delete_queues, prefix)
        colmena = Server(
            "colmena",
            f"http://127.0.0.1:{port}/webhooks/stripe",
            servers.enter_context(started([sys.executable, "-m", "colmena", "ingress"], env)),
        )
        ratios = await saturated_rounds(bare, colmena, args)
        latencies = {
            server.name: await fixed_rate(server.url, signed_events(int(args.rate * 5)), args.rate)
            for server in (bare, colmena)
        }
        await servers.aclose()
        raw_rate = await raw_commits(database_url, args.events, args.concurrency)

    print(f"pairs' ratios: median x{median(ratios):.2f}, x{min(ratios):.2f} to x{max(ratios):.2f}")
    print(f"{bare.cores()}; {colmena.cores()}")
    figure("bare verify+parse handler", bare.rate, "webhooks/s")
    figure(
        "colmena ingress (verify, inbox+outbox commit, publish)",
        colmena.rate,
        "webhooks/s",
        baseline=bare.rate,
        baseline_name="bare handler",
    )
    figure(f"raw one-row PostgreSQL commits, {args.concurrency} clients", raw_rate, "commits/s")
    figure(
        "colmena ingress against raw one-row commits",
        colmena.rate,
        "webhooks/s",
        baseline=raw_rate,
        baseline_name="raw commits",
    )
    figure("bare handler CPU per webhook", bare.cpu_per_webhook * 1e6, "us")
    figure(
        "colmena ingress CPU per webhook",
        colmena.cpu_per_webhook * 1e6,
        "us",
        baseline=bare.cpu_per_webhook * 1e6,
        baseline_name="bare handler",
    )
    figure(
        "bare handler, one process (1 / CPU per webhook)", 1 / bare.cpu_per_webhook, "webhooks/s"
    )
    figure(
        "colmena ingress, one process (1 / CPU per webhook)",
        1 / colmena.cpu_per_webhook,
        "webhooks/s",
        baseline=1 / bare.cpu_per_webhook,
        baseline_name="bare handler",
    )
    for name, values in latencies.items():
        figure(f"{name} p50 at {args.rate:.0f}/s offered", percentile(values, 50) * 1000, "ms")
        figure(f"{name} p99 at {args.rate:.0f}/s offered", percentile(values, 99) * 1000, "ms")


if __name__ == "__main__":
    exit_on_sigterm()
    asyncio.run(main())
