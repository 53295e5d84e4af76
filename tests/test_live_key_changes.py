"""A key the tenant stores or deletes reaches its running bot without a restart.

End to end on the real services: the tenant API seals the key, a bots worker (in this process,
so it shares the runtime with the test) takes it in and, through the outbox, replaces the
running bot's keys file; a delete does the same. Run on Docker and on local processes. The bot
is never restarted, and no key shows up in the container's config, inspect output, host process
listings, the bot's output or colmena's logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest
import structlog

from colmena.actors.bots import deliver_keys, reconcile_one, runtime_of
from colmena.config import Settings
from colmena.config.logging import configure_logging
from colmena.store import tenants as store
from colmena.supervisor.bot_image import ensure_bot_image
from colmena.supervisor.key_delivery import CONTAINER_KEYS_FILE
from colmena.supervisor.process_runtime import ProcessRuntime
from colmena.supervisor.runtime import Runtime
from colmena.supervisor.runtimes import close_runtimes
from tests.bots_support import (
    add_tenant,
    bearer,
    bot_of,
    bot_settings,
    remove_instance,
    resources_for,
)
from tests.conftest import wait_for
from tests.test_key_delivery import NOBODY, host_processes_showing


@pytest.fixture(params=["process", pytest.param("docker", marks=pytest.mark.docker)])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def active(kind: str, settings: Settings, tmp_path: Path, request: pytest.FixtureRequest):
    engine = request.getfixturevalue("docker_engine") if kind == "docker" else None
    image = ensure_bot_image(engine) if engine is not None else None
    chosen = bot_settings(settings, tmp_path, kind, image)
    yield chosen
    close_runtimes()
    if engine is not None:
        remove_instance(engine, chosen.bot_instance)


def keys_seen_by_bot(runtime: Runtime, tenant_id: str) -> dict[str, Any]:
    """The keys file as the running bot sees it, read the way the bot reads it."""
    if isinstance(runtime, ProcessRuntime):
        loaded: dict[str, Any] = json.loads(runtime.keys_file(tenant_id).read_text())
        return loaded
    bot = bot_of(runtime, tenant_id)
    assert bot is not None
    api = docker.from_env().api
    exec_id = api.exec_create(bot.bot_id, ["cat", CONTAINER_KEYS_FILE], user=NOBODY)["Id"]
    loaded = json.loads(api.exec_start(exec_id).decode())
    return loaded


def shown_by_engine(runtime: Runtime, tenant_id: str) -> str:
    """Everything the engine shows about the bot (its config and every exec it ran)."""
    if isinstance(runtime, ProcessRuntime):
        return ""
    bot = bot_of(runtime, tenant_id)
    assert bot is not None
    api = docker.from_env().api
    attrs = api.inspect_container(bot.bot_id)
    execs = [api.exec_inspect(exec_id) for exec_id in attrs.get("ExecIDs") or []]
    return json.dumps([attrs, execs])


async def test_a_stored_rotated_or_deleted_key_reaches_the_running_bot(
    active, db, make_client, start_worker, capsys
) -> None:
    first, second = f"sk-first-{uuid.uuid4().hex}", f"sk-second-{uuid.uuid4().hex}"
    tenant_id, token = await add_tenant(db)
    await store.set_desired(db, tenant_id, "running", reset_restarts=True)
    resources = resources_for(active)
    await resources.start()
    handlers = logging.getLogger().handlers[:]
    configure_logging(dev=False)
    try:
        await reconcile_one(resources, tenant_id)
        runtime = await runtime_of(active)
        started = await asyncio.to_thread(bot_of, runtime, tenant_id)
        assert started is not None
        assert await asyncio.to_thread(keys_seen_by_bot, runtime, tenant_id) == {}
        client = await make_client(active)
        start_worker(settings_override=active, queues=["bots"])

        async def bot_has(expected: dict[str, str], reloads: int) -> bool:
            """The file holds `expected` and the bot has re-read a changed file `reloads` times."""
            if await asyncio.to_thread(keys_seen_by_bot, runtime, tenant_id) != expected:
                return False
            output = await asyncio.to_thread(runtime.logs, tenant_id, 1000)
            return sum(line.startswith("colmena-bot keys reloaded (") for line in output) == reloads

        changes = [
            ("POST", first, {"binance": first}),  # stored
            ("POST", second, {"binance": second}),  # rotated
            ("DELETE", None, {}),  # deleted
        ]
        for reloads, (method, key, expected) in enumerate(changes, start=1):
            if method == "POST":
                sent = await client.post(
                    "/api/v1/keys", json={"provider": "binance", "key": key}, headers=bearer(token)
                )
                assert sent.status == 201
            else:
                sent = await client.delete("/api/v1/keys/binance", headers=bearer(token))
                assert sent.status == 204
            await wait_for(lambda e=expected, r=reloads: bot_has(e, r), timeout=30, interval=0.1)

        now = await asyncio.to_thread(bot_of, runtime, tenant_id)
        assert now is not None and now.bot_id == started.bot_id  # never restarted
        shown = await asyncio.to_thread(shown_by_engine, runtime, tenant_id)
        output = await asyncio.to_thread(runtime.logs, tenant_id, 1000)
        logged = capsys.readouterr()
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = handlers
        await resources.close()
    assert logged.err.count("provider keys delivered to the running bot") >= 3
    for key in (first, second):
        assert key not in shown and key not in logged.err and key not in logged.out
        assert not any(key in line for line in output)
        assert host_processes_showing(key) == []


async def test_keys_for_a_bot_that_is_not_running_wait_for_its_next_start(active, db) -> None:
    """deliver_keys on a tenant without a running bot does nothing and fails nothing, however
    often it comes; the next start writes the keys file from what is stored."""
    tenant_id, _ = await add_tenant(db)
    resources = resources_for(active)
    await resources.start()
    try:
        await deliver_keys(resources, tenant_id)
        await deliver_keys(resources, tenant_id)
        runtime = await runtime_of(active)
        assert await asyncio.to_thread(bot_of, runtime, tenant_id) is None
    finally:
        await resources.close()
