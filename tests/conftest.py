"""Shared fixtures: a fresh database and fresh queue names per test, on the real services.

Databases are cloned from a template migrated once per run (CREATE DATABASE ... TEMPLATE), which
takes milliseconds; queue names carry a per-test prefix and are deleted afterwards, so runs on one
machine never see each other's messages.

Tests marked `docker` need a Docker engine. Without one they skip, saying why; with `CI=true`
they fail instead, because a CI run that skipped them would pass without proving anything.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import docker
import dramatiq
import pika
import pytest
from aiohttp.test_utils import TestClient, TestServer

from colmena.actors import all_actors
from colmena.config import Settings
from colmena.http.app import create_app
from colmena.runtime.broker import build_broker
from colmena.runtime.loop_worker import LoopWorker
from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.queues import DOMAIN_QUEUES, queue_declarations
from colmena.runtime.resources import Resources
from colmena.store.migrate import apply_migrations
from colmena.store.pool import connect
from colmena.supervisor.docker_runtime import docker_available

ADMIN_URL = os.environ.get("COLMENA_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
AMQP_URL = os.environ.get(
    "COLMENA_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F?heartbeat=30"
)
RUN_ID = uuid.uuid4().hex[:8]
# The console's real-browser fixtures (chromium via Playwright, axe-core).
pytest_plugins = ["tests.browser_support"]


def _url_for(database: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """Put the root logger back after each test. `configure_logging` (which tests call, as
    every colmena process does at start) points the root handler at the stream of the moment,
    often pytest's capture of that test; a thread that logs later (a stand-in SMTP server
    noticing a kept-open session close) would then write to a closed file."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def wait_for(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Poll an async condition until it is truthy; fail with the last value after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


@functools.cache
def _docker_answers() -> bool:
    return docker_available()


def require_docker() -> None:
    """Return if a Docker engine answers; otherwise skip the test, or fail it under CI=true."""
    if _docker_answers():
        return
    if in_ci():
        pytest.fail(
            "no Docker engine answers, and CI=true: docker tests must run in CI, not skip",
            pytrace=False,
        )
    pytest.skip("no Docker engine answers (with CI=true this fails instead)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that takes the shared `docker_engine` fixture is a docker test, marked or not."""
    for item in items:
        if "docker_engine" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.docker)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Every `docker` test, before any of its fixtures runs: an engine, or skip/fail."""
    if item.get_closest_marker("docker") is not None:
        require_docker()


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[docker.DockerClient]:
    """A client of the machine's Docker engine, shared by the run."""
    require_docker()
    client = docker.from_env(timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="session")
def template_database() -> Iterator[str]:
    name = f"colmena_tmpl_{RUN_ID}"

    async def create() -> None:
        admin = await asyncpg.connect(ADMIN_URL)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        conn = await asyncpg.connect(_url_for(name))
        await apply_migrations(conn)
        await conn.close()

    asyncio.run(create())
    yield name

    async def drop() -> None:
        admin = await asyncpg.connect(ADMIN_URL)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    asyncio.run(drop())


@pytest.fixture
async def database_url(template_database: str) -> AsyncIterator[str]:
    """A migrated database of this test's own, dropped afterwards."""
    name = f"colmena_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield _url_for(name)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture
async def empty_database_url() -> AsyncIterator[str]:
    """A database with no schema at all (for migration tests)."""
    name = f"colmena_e_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield _url_for(name)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def queue_prefix() -> Iterator[str]:
    """This test's own queue names; all of them (with .DQ and .XQ) are deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    yield prefix
    queues = set(DOMAIN_QUEUES) | {spec.queue for spec in all_actors()}
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    for queue in queues:
        for name, _ in queue_declarations(prefix + queue, quorum=False):
            channel.queue_delete(queue=name)
    connection.close()


@pytest.fixture
def settings(database_url: str, queue_prefix: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        broker_url=AMQP_URL,
        queue_prefix=queue_prefix,
        data_dir=tmp_path / "data",
        env="dev",
        min_backoff_ms=100,
        max_backoff_ms=1_000,
        max_retries=2,
        relay_grace_s=0,
        # Tests probe routes with many requests and wrong tokens on purpose; the limits have
        # their own tests (test_rate_limits.py), which turn them on.
        rate_limit_preset="off",
        # A 429 is held back a second in production; tests that provoke many would wait minutes
        # for nothing. test_refusal_delay.py turns it on.
        refusal_delay_s=0,
        _env_file=None,
    )


def queue_counts(name: str) -> tuple[int, int, int]:
    """(ready in Q, in Q.DQ, in Q.XQ) straight from RabbitMQ."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        counts = []
        for queue, arguments in queue_declarations(name, quorum=False):
            result = channel.queue_declare(queue=queue, durable=True, arguments=arguments)
            counts.append(result.method.message_count)
        return counts[0], counts[1], counts[2]
    finally:
        connection.close()


@dataclass
class WorkerSystem:
    broker: dramatiq.Broker
    worker: LoopWorker
    resources: Resources


@pytest.fixture
def start_worker(settings: Settings) -> Iterator[Callable[..., WorkerSystem]]:
    """Start an in-test worker on the real RabbitMQ with this test's queue names: the loop
    worker `colmena worker` runs, so the suite tests what production runs.

    `queues` limits it to some queues (unprefixed names), so messages for other domains stay in
    RabbitMQ where the test can count them.
    """
    started: list[WorkerSystem] = []

    def start(
        *,
        threads: int = 2,
        settings_override: Settings | None = None,
        queues: list[str] | None = None,
    ) -> WorkerSystem:
        active = settings_override or settings
        resources = Resources(
            active,
            database_url=active.require_database_url(),
            publisher=AmqpPublisher(
                active.require_broker_url(), active.queue_prefix, quorum=active.quorum_queues
            ),
        )
        broker = build_broker(
            active,
            resources,
            all_actors(),
            broker_url=active.require_broker_url(),
            quorum=active.quorum_queues,
        )
        broker.emit_after("process_boot")
        consumed = {active.queue_prefix + queue for queue in queues} if queues else None
        worker = LoopWorker(broker, queues=consumed, worker_threads=threads, worker_timeout=100)
        worker.start()
        system = WorkerSystem(broker=broker, worker=worker, resources=resources)
        started.append(system)
        return system

    yield start
    for system in started:
        system.worker.stop()
        system.broker.close()


@pytest.fixture
async def make_client(settings: Settings) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Start the real ingress app (test server on 127.0.0.1) and return an aiohttp client for it."""
    clients: list[TestClient] = []

    async def make(
        settings_override: Settings | None = None, *, database_url: str | None = None
    ) -> TestClient:
        active = settings_override or settings
        resources = Resources(
            active,
            database_url=database_url or active.require_database_url(),
            publisher=AmqpPublisher(
                active.require_broker_url(),
                active.queue_prefix,
                quorum=active.quorum_queues,
                connect_timeout=2,
            ),
        )
        client = TestClient(TestServer(create_app(active, resources), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client):
    return await make_client()
