"""Real colmena processes on hosts of their own (bench.cluster.hosts), sharing no directory.

Each host gets a root directory of its own: its data dir (its product archive cache included)
and its copy of the product (read-only deployment data, copied with its modification times as
a deployment would ship it). Processes start with that root as their working directory, so no
`.env` or relative path of the repository is seen. They reach PostgreSQL, RabbitMQ and Redis
only over the host's link, through the bridge forwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pika
import pytest

from bench.cluster.hosts import Host, Hosts, HostsUnavailable
from colmena.domain.licensing import KeyPair
from colmena.runtime.queues import queue_declarations
from tests.conftest import AMQP_URL, in_ci, wait_for
from tests.licenses_support import PRODUCT
from tests.payments_support import STRIPE_SECRET

REDIS_URL = os.environ.get("COLMENA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
HTTP_PORT = 8080  # every host has its own network stack: the default ports never collide
PUBLIC_BUDGET = 3  # requests a client may make to "public" routes, across every ingress (Redis)
SERVICE_PORTS = {"PostgreSQL": 5432, "RabbitMQ": 5672, "Redis": 6379}
LOOPBACK_PROBE = """
import socket, sys
for port in map(int, sys.argv[1:]):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        print(port, "open")
    except OSError as exc:
        print(port, type(exc).__name__)
"""


@contextlib.contextmanager
def hosts_or_skip(prefix: str) -> Iterator[Hosts]:
    """Hosts for this test; without network namespaces skip, saying why (fail under CI=true)."""
    with contextlib.ExitStack() as stack:
        try:
            hosts = stack.enter_context(Hosts(prefix))
        except HostsUnavailable as exc:
            if in_ci():
                pytest.fail(f"{exc}, and CI=true: this test must run in CI", pytrace=False)
            pytest.skip(f"{exc} (with CI=true this fails instead)")
        yield hosts


def write_product(directory: Path) -> None:
    """The product every host ships: a few files, one larger than a download chunk."""
    (directory / "bin").mkdir(parents=True)
    (directory / "README.txt").write_text("Colmena bot\n")
    (directory / "bin" / "colmena-bot").write_bytes(b"#!/bin/sh\necho bot\n")
    (directory / "bin" / "colmena-bot").chmod(0o755)
    (directory / "data.bin").write_bytes(os.urandom(700 * 1024))


@dataclass
class Deployment:
    """colmena processes on hosts, each with its own root under `workdir`."""

    hosts: Hosts
    workdir: Path
    product: Path
    env: dict[str, str]
    keys: KeyPair
    roots: dict[str, Path] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> Host:
        """A new host running `colmena ARGS`, logging to its root's colmena.log. An ingress
        holds only the license public key, as in production; the others sign."""
        host = self.hosts.add(name)
        root = self.workdir / name
        shutil.copytree(self.product, root / "products" / PRODUCT)
        self.roots[name] = root
        env = {
            **self.env,
            "COLMENA_HTTP_HOST": host.ip,
            "COLMENA_DATA_DIR": str(root / "data"),
            "COLMENA_LICENSE_PRODUCTS_DIR": str(root / "products"),
            **(
                {"COLMENA_LICENSE_PUBLIC_KEY": self.keys.public_pem}
                if args[:1] == ("ingress",)
                else {"COLMENA_LICENSE_SIGNING_KEY": self.keys.private_pem}
            ),
        }
        with (root / "colmena.log").open("wb") as log:
            self.processes[name] = host.popen(
                [sys.executable, "-m", "colmena", *args],
                env,
                cwd=root,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return host

    def log_tail(self, name: str, chars: int = 3000) -> str:
        return (self.roots[name] / "colmena.log").read_text(errors="replace")[-chars:]


def deployment(
    hosts: Hosts,
    workdir: Path,
    *,
    database_url: str,
    queue_prefix: str,
    keys: KeyPair,
    smtp_port: int,
) -> Deployment:
    """Settings every host shares: the services through the bridge, SMTP on the bridge."""
    product = workdir / "product-release"
    write_product(product)
    env = {key: value for key, value in os.environ.items() if not key.startswith("COLMENA_")}
    env.update(
        {
            "COLMENA_DATABASE_URL": hosts.reach(database_url),
            "COLMENA_BROKER_URL": hosts.reach(AMQP_URL),
            "COLMENA_REDIS_URL": hosts.reach(REDIS_URL),
            "COLMENA_REDIS_PREFIX": f"hosts{uuid.uuid4().hex[:8]}:",
            "COLMENA_RATE_LIMIT_PUBLIC": f"{PUBLIC_BUDGET}/min burst {PUBLIC_BUDGET}",
            "COLMENA_QUEUE_PREFIX": queue_prefix,
            "COLMENA_HTTP_PORT": str(HTTP_PORT),
            "COLMENA_STRIPE_WEBHOOK_SECRETS": STRIPE_SECRET,
            # The load balancer's name: links never point at the host that sent the email.
            "COLMENA_LICENSE_BASE_URL": "https://shop.example.com",
            "COLMENA_SMTP_HOST": hosts.bridge_ip,
            "COLMENA_SMTP_PORT": str(smtp_port),
            "COLMENA_SMTP_STARTTLS": "false",
            "COLMENA_MIN_BACKOFF_MS": "200",
            "COLMENA_MAX_BACKOFF_MS": "2000",
            "COLMENA_RELAY_INTERVAL_S": "1",
            "COLMENA_RELAY_GRACE_S": "2",
            "COLMENA_WORKER_PROCESSES": "1",
            "COLMENA_WORKER_THREADS": "2",
        }
    )
    return Deployment(hosts, workdir, product, env, keys)


async def wait_ready(base_url: str, timeout: float = 120.0) -> dict:
    """/readyz of an ingress, once it answers 200 (it checks its database and broker)."""

    async def ready() -> dict | None:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
                async with session.get(f"{base_url}/readyz") as response:
                    return await response.json() if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    return await wait_for(ready, timeout=timeout, interval=0.25)


def consumer_count(queue: str) -> int:
    """How many consumers RabbitMQ has on `queue` (0 while nobody declared it)."""
    name, arguments = queue_declarations(queue, quorum=False)[0]
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        result = connection.channel().queue_declare(queue=name, durable=True, arguments=arguments)
        return int(result.method.consumer_count)
    finally:
        connection.close()


async def loopback_answers(host: Host) -> dict[str, str]:
    """What each of the machine's services looks like from inside `host` on 127.0.0.1."""
    probe = host.popen(
        [sys.executable, "-c", LOOPBACK_PROBE, *map(str, SERVICE_PORTS.values())],
        stdout=subprocess.PIPE,
    )
    output, _ = await asyncio.to_thread(probe.communicate, timeout=30)
    by_port = dict(line.split(" ", 1) for line in output.decode().splitlines())
    return {service: by_port.get(str(port), "?") for service, port in SERVICE_PORTS.items()}
