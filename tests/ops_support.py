"""Helpers for operations tests: real `colmena` processes, their environment, and scraping."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bench.common import free_port
from colmena.config import Settings
from colmena.http.health import metrics_app

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def colmena_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a colmena process on this test's database and queues, nothing
    inherited."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("COLMENA_", "dramatiq_"))
        and key.lower() != "prometheus_multiproc_dir"
    }
    env.update(
        {
            "COLMENA_DATABASE_URL": settings.require_database_url(),
            "COLMENA_BROKER_URL": settings.require_broker_url(),
            "COLMENA_QUEUE_PREFIX": settings.queue_prefix,
            "COLMENA_DATA_DIR": str(settings.data_dir),
            "COLMENA_HTTP_HOST": "127.0.0.1",
            "COLMENA_INGRESS_METRICS_PORT": str(free_port()),
            "COLMENA_MIN_BACKOFF_MS": "100",
            "COLMENA_MAX_BACKOFF_MS": "500",
            "COLMENA_REFUSAL_DELAY_S": str(settings.refusal_delay_s),
            **extra,
        }
    )
    return env


@dataclass
class Spawned:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Spawned]]:
    """Start `colmena <args>` in its own session; SIGTERM (then SIGKILL) whatever is left at
    the end."""
    started: list[Spawned] = []

    def start(name: str, args: list[str], env: dict[str, str]) -> Spawned:
        log = tmp_path / f"{name}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "colmena", *args],
            env=env,
            cwd=tmp_path,
            start_new_session=True,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        spawned = Spawned(process, log)
        started.append(spawned)
        return spawned

    yield start
    for spawned in started:
        if spawned.process.poll() is None:
            spawned.process.send_signal(signal.SIGTERM)
    for spawned in started:
        try:
            spawned.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(spawned.process.pid, signal.SIGKILL)
            spawned.process.wait(timeout=10)


async def scrape(url: str) -> str | None:
    """The exposition text at `url`, or None while nothing answers there."""
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return await response.text() if response.status == 200 else None
    except aiohttp.ClientError:
        return None


async def ingress_metrics(client: TestClient) -> str:
    """What Prometheus reads of the ingress behind `client`, through a metrics listener of its
    own as `colmena ingress` serves it (the public app has no /metrics)."""
    async with TestClient(TestServer(metrics_app(client.app), host="127.0.0.1")) as listener:
        response = await listener.get("/metrics")
        assert response.status == 200, await response.text()
        return await response.text()


def exported_names(text: str) -> set[str]:
    """Metric names in HELP/TYPE lines (labelled metrics are there before any sample) and
    samples."""
    names = set()
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            names.add(line.split()[2])
        elif line and not line.startswith("#") and (match := SAMPLE.match(line)):
            names.add(match.group(1))
    return names


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of `name`."""
    found = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and match.group(1) == name:
            labels = dict(LABEL.findall(match.group(2) or ""))
            found.append((labels, float(match.group(3))))
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    """The sum of the samples of `name` whose labels include `labels`; None when there is none."""
    matching = [number for found, number in samples(text, name) if labels.items() <= found.items()]
    return sum(matching) if matching else None
