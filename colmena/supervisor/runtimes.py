"""The one runtime a process uses for its settings, chosen once and kept.

Kept per process because the process runtime owns its bots (they live as long as it does) and
the Docker runtime holds a client: the worker's actors and the scheduler's reconciler and log
shipper of one process must all see the same one. The ingress never builds one. `colmena dev`
gets local processes when no Docker engine answers; production insists on Docker.
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path

import docker
import structlog

from colmena.config import Settings, SettingsError
from colmena.supervisor.bot_image import ensure_bot_image
from colmena.supervisor.docker_runtime import DockerRuntime, docker_available
from colmena.supervisor.process_runtime import ProcessRuntime
from colmena.supervisor.runtime import Runtime

log = structlog.get_logger(__name__)

BOT_SCRIPT = Path(__file__).with_name("bot.sh")
DOCKER_TIMEOUT_S = 60
_runtimes: dict[tuple[object, ...], Runtime] = {}
_lock = threading.Lock()


def _key(settings: Settings) -> tuple[object, ...]:
    return (
        settings.bot_runtime,
        settings.docker_url,
        settings.bot_image,
        settings.bot_network,
        settings.bot_instance,
        str(settings.bot_log_path.resolve()),
        settings.env,
    )


def runtime_kind(settings: Settings) -> str:
    """docker or process, resolving `auto` by asking the engine."""
    if settings.bot_runtime != "auto":
        return settings.bot_runtime
    if docker_available(settings.docker_url):
        return "docker"
    if settings.env == "dev":
        return "process"
    raise SettingsError(
        "no Docker engine answers (COLMENA_DOCKER_URL); bots need one in production"
    )


def runtime_for(settings: Settings) -> Runtime:
    """This process's runtime for `settings` (blocking the first time: call it in a thread)."""
    key = _key(settings)
    with _lock:
        found = _runtimes.get(key)
        if found is None:
            found = _runtimes[key] = _build(settings)
    return found


def _build(settings: Settings) -> Runtime:
    kind = runtime_kind(settings)
    if kind == "process":
        log.info("bots run as local processes", log_dir=str(settings.bot_log_path))
        process_runtime = ProcessRuntime(BOT_SCRIPT, settings.bot_log_path)
        # Its bots run in sessions of their own: stop them when this process exits.
        atexit.register(process_runtime.close)
        return process_runtime
    client = (
        docker.DockerClient(base_url=settings.docker_url, timeout=DOCKER_TIMEOUT_S)
        if settings.docker_url
        else docker.from_env(timeout=DOCKER_TIMEOUT_S)
    )
    image = settings.bot_image
    if image is None:
        image = ensure_bot_image(client)
    runtime = DockerRuntime(
        client, image=image, network_mode=settings.bot_network, instance=settings.bot_instance
    )
    log.info(
        "bots run as Docker containers",
        instance=settings.bot_instance,
        network=settings.bot_network,
    )
    return runtime


def close_runtimes() -> None:
    """Stop process bots and close clients (process exit, tests)."""
    with _lock:
        runtimes = list(_runtimes.values())
        _runtimes.clear()
    for runtime in runtimes:
        runtime.close()
