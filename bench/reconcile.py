"""Reconcile cost for 10, 100 and 500 tenants, and a start command's 202 -> running latency.

For each size: N tenants in a scratch database; K of them are started one at a time through
the real path (HTTP `POST /api/v1/bot/start` on the ingress -> outbox -> RabbitMQ -> a
Dramatiq worker's `run_command` -> runtime), timing from the 202 to the bot running. Then
every tenant is set to running and two full `reconcile_all` passes are timed: the cold pass
starts the N - K bots that do not exist yet, the steady pass finds everything as desired (one
listing, then per tenant a lock, a row read, a health check reading the log).

Docker containers (the tiny busybox image, network none) by default; `--process` sizes use the
ProcessRuntime, which the 500-tenant run uses by default: 500 containers is mostly a
measurement of containerd shims on a 2-core machine, not of colmena.

    python bench/reconcile.py [--docker 10,100] [--process 500] [--samples 30]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import docker
import dramatiq
from aiohttp import web
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).parent.parent))

from cryptography.fernet import Fernet

from bench.common import (
    AMQP_URL,
    delete_queues,
    figure,
    machine,
    median,
    percentile,
    scratch_database,
)
from colmena.actors import all_actors
from colmena.actors.bots import reconcile_all, runtime_of
from colmena.config import Settings
from colmena.config.logging import configure_logging
from colmena.domain.tenants import DEFAULT_CONFIG, new_token, token_digest
from colmena.http.app import create_app
from colmena.runtime.broker import build_broker
from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.resources import Resources
from colmena.store import tenants as store
from colmena.supervisor.bot_image import ensure_bot_image
from colmena.supervisor.runtime import INSTANCE_LABEL, BotState, Runtime
from colmena.supervisor.runtimes import close_runtimes


def settings_for(url: str, kind: str, image: str | None, data_dir: Path) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(
        database_url=url,
        broker_url=AMQP_URL,
        queue_prefix=f"bench{tag}_",
        data_dir=data_dir,
        env="dev",
        bot_runtime=kind,
        bot_image=image,
        bot_network="none",
        bot_instance=f"bench-{tag}",
        secret_keys=SecretStr(Fernet.generate_key().decode()),
        db_pool_max=20,
        log_level="WARNING",
        relay_grace_s=0,
        # One client starts hundreds of tenants' bots as fast as it can: the rate limits and
        # the tenant bounds would measure themselves, not the reconciler.
        rate_limit_preset="off",
        _env_file=None,
    )


def resources(settings: Settings) -> Resources:
    return Resources(
        settings,
        database_url=settings.require_database_url(),
        publisher=AmqpPublisher(settings.require_broker_url(), settings.queue_prefix),
    )


async def wait_running(runtime: Runtime, tenant_id: str, timeout_s: float = 60) -> None:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        bots = await asyncio.to_thread(runtime.list_bots)
        if any(b.tenant_id == tenant_id and b.state is BotState.RUNNING for b in bots):
            return
        await asyncio.sleep(0.005)
    raise TimeoutError(f"{tenant_id} not running after {timeout_s}s")


async def measure(size: int, kind: str, image: str | None, samples: int) -> None:
    label = f"{kind}_{size}"
    with tempfile.TemporaryDirectory() as scratch:
        async with scratch_database() as url:
            settings = settings_for(url, kind, image, Path(scratch))
            main = resources(settings)
            await main.start()
            tokens: dict[str, str] = {}
            async with main.pool.acquire() as conn, conn.transaction():
                for i in range(size):
                    tenant_id, token = f"bench-{i:04d}", new_token()
                    await store.create_tenant(
                        conn,
                        tenant_id=tenant_id,
                        email=f"{tenant_id}@bench.test",
                        plan="free",
                        token_sha256=token_digest(token),
                        config=dict(DEFAULT_CONFIG),
                    )
                    tokens[tenant_id] = token
            worker_resources = resources(settings)
            broker = build_broker(settings, worker_resources, all_actors(), broker_url=AMQP_URL)
            broker.emit_after("process_boot")
            worker = dramatiq.Worker(
                broker, queues={settings.queue_prefix + "bots"}, worker_threads=8
            )
            worker.start()
            runner = web.AppRunner(create_app(settings, resources(settings)))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            runtime = await runtime_of(settings)
            try:
                latencies = []
                async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
                    for tenant_id in list(tokens)[: min(samples, size)]:
                        async with http.post(
                            "/api/v1/bot/start",
                            headers={"Authorization": f"Bearer {tokens[tenant_id]}"},
                        ) as response:
                            assert response.status == 202, await response.text()
                        accepted = time.perf_counter()
                        await wait_running(runtime, tenant_id)
                        latencies.append((time.perf_counter() - accepted) * 1000)
                figure(f"{label}_start_202_to_running_p50", median(latencies), "ms")
                figure(f"{label}_start_202_to_running_p99", percentile(latencies, 99), "ms")

                async with main.pool.acquire() as conn:
                    await conn.execute("UPDATE bots SET desired = 'running'")
                began = time.perf_counter()
                cold = await reconcile_all(main)
                figure(f"{label}_reconcile_cold_pass", (time.perf_counter() - began) * 1000, "ms")
                print(f"  cold pass steps: {dict(cold)}", flush=True)
                steady_times = []
                for _ in range(3):
                    began = time.perf_counter()
                    steady = await reconcile_all(main)
                    steady_times.append((time.perf_counter() - began) * 1000)
                figure(f"{label}_reconcile_steady_pass", median(steady_times), "ms")
                rounded = [round(t) for t in steady_times]
                print(
                    f"  steady pass steps: {dict(steady)} (median of 3: {rounded} ms)", flush=True
                )
            finally:
                worker.stop()
                broker.close()
                await runner.cleanup()
                await main.close()
                await asyncio.to_thread(close_runtimes)
                if kind == "docker":
                    await asyncio.to_thread(remove_containers, settings.bot_instance)
                delete_queues(settings.queue_prefix)


def remove_containers(instance: str) -> None:
    client = docker.from_env(timeout=120)
    try:
        for row in client.api.containers(
            all=True, filters={"label": [f"{INSTANCE_LABEL}={instance}"]}
        ):
            client.api.remove_container(row["Id"], force=True)
    finally:
        client.close()


def sizes(value: str) -> list[int]:
    return [int(part) for part in value.split(",") if part.strip()]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--docker", type=sizes, default=[10, 100], help="tenant counts run as containers"
    )
    parser.add_argument(
        "--process", type=sizes, default=[500], help="tenant counts run as local processes"
    )
    parser.add_argument("--samples", type=int, default=30, help="start commands timed per size")
    args = parser.parse_args()
    configure_logging(dev=True, level="WARNING")
    print(f"machine: {machine()}", flush=True)
    image = None
    if args.docker:
        client = docker.from_env(timeout=60)
        image = ensure_bot_image(client)
        client.close()
    for size in args.docker:
        print(f"{size} tenants, Docker containers", flush=True)
        await measure(size, "docker", image, args.samples)
    for size in args.process:
        print(f"{size} tenants, local processes", flush=True)
        await measure(size, "process", None, args.samples)


if __name__ == "__main__":
    asyncio.run(main())
