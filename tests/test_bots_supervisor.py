"""Bot supervision end to end on the real Docker engine and on local processes.

Commands go through the real ingress, outbox, RabbitMQ and a Dramatiq worker; the reconciler
and the log shipper run as the scheduler would call them. Each test has its own instance
label, so its containers are its own, and removes them afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import pytest
import structlog
from aiohttp import web
from prometheus_client import REGISTRY

from colmena.actors import bots as bots_actors
from colmena.actors.bots import (
    reconcile_all,
    reconcile_due,
    reconcile_one,
    run_command,
    runtime_of,
    ship_logs,
)
from colmena.config import Settings
from colmena.config.logging import configure_logging
from colmena.domain.tenants import new_token, token_digest
from colmena.http.bot_logs import LOG_STREAMS
from colmena.runtime.resources import Resources
from colmena.store import bot_logs
from colmena.store import tenants as store
from colmena.supervisor.bot_image import ensure_bot_image
from colmena.supervisor.docker_runtime import DockerRuntime
from colmena.supervisor.process_runtime import ProcessRuntime
from colmena.supervisor.runtime import INSTANCE_LABEL, TENANT_LABEL, BotState, Runtime
from colmena.supervisor.runtimes import close_runtimes
from tests.bots_support import (
    ADMIN_TOKEN,
    add_tenant,
    bearer,
    bot_of,
    bot_settings,
    image_from,
    remove_instance,
    resources_for,
)
from tests.conftest import wait_for
from tests.fuzz_support import capture_logs
from tests.ops_support import ingress_metrics
from tests.test_openapi import Checked

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def bot_image(docker_engine) -> str:
    return ensure_bot_image(docker_engine)


@pytest.fixture(params=[pytest.param("docker", marks=pytest.mark.docker), "process"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def active(request, kind: str, settings: Settings, tmp_path: Path):
    image = request.getfixturevalue("bot_image") if kind == "docker" else None
    chosen = bot_settings(settings, tmp_path, kind, image)
    yield chosen
    close_runtimes()
    if kind == "docker":
        remove_instance(request.getfixturevalue("docker_engine"), chosen.bot_instance)


@pytest.fixture
async def resources(active: Settings) -> AsyncIterator[Resources]:
    resources = resources_for(active)
    await resources.start()
    yield resources
    await resources.close()


async def runtime(active: Settings) -> Runtime:
    return await runtime_of(active)


def environment(runtime: Runtime, tenant_id: str, bot_id: str) -> dict[str, str]:
    """The bot's real environment, read from outside it."""
    if isinstance(runtime, ProcessRuntime):
        raw = Path(f"/proc/{runtime.pid(tenant_id)}/environ").read_bytes()
        items = [item.decode() for item in raw.split(b"\0") if item]
    else:
        items = docker.from_env().api.inspect_container(bot_id)["Config"]["Env"]
    return dict(item.split("=", 1) for item in items)


def kill_from_outside(runtime: Runtime, tenant_id: str, bot_id: str) -> None:
    if isinstance(runtime, ProcessRuntime):
        os.kill(runtime.pid(tenant_id), signal.SIGKILL)
    else:
        docker.from_env().api.kill(bot_id)


async def command_done(client, token: str, command_id: str) -> dict:
    async def finished():
        body = await (
            await client.get(f"/api/v1/commands/{command_id}", headers=bearer(token))
        ).json()
        return body if body["status"] != "queued" else None

    body = await wait_for(finished, timeout=30)
    assert body["status"] == "done", body
    return body


async def send(client, token: str, action: str) -> str:
    response = await client.post(f"/api/v1/bot/{action}", headers=bearer(token))
    assert response.status == 202, await response.text()
    return (await response.json())["command_id"]


async def running_bot(rt: Runtime, tenant_id: str):
    async def probe():
        bot = await asyncio.to_thread(bot_of, rt, tenant_id)
        return bot if bot is not None and bot.state is BotState.RUNNING else None

    return await wait_for(probe, timeout=30)


async def until_log(rt: Runtime, tenant_id: str, text: str) -> list[str]:
    async def probe():
        lines = await asyncio.to_thread(rt.logs, tenant_id, 200)
        return lines if any(text in line for line in lines) else None

    return await wait_for(probe, timeout=30)


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


# Commands through the API ---------------------------------------------------------------------


async def test_start_runs_the_bot_with_plan_limits_and_hardening(
    kind, active, db, make_client, start_worker
) -> None:
    tenant_id, token = await add_tenant(db, plan="pro")
    client = await make_client(active)
    start_worker(settings_override=active, queues=["bots"])

    await command_done(client, token, await send(client, token, "start"))

    rt = await runtime(active)
    bot = await running_bot(rt, tenant_id)
    assert bot.config_version == 1
    status = await (await client.get("/api/v1/bot/status", headers=bearer(token))).json()
    assert (
        status["desired"] == "running" and status["actual"] == "running" and status["plan"] == "pro"
    )
    if kind == "docker":
        attrs = docker.from_env().api.inspect_container(bot.bot_id)
        host = attrs["HostConfig"]
        assert host["Memory"] == 128 * MiB and host["MemorySwap"] == 128 * MiB
        assert host["NanoCpus"] == 500_000_000
        assert host["PidsLimit"] == 64
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert host["NetworkMode"] == "none"
        assert host["RestartPolicy"]["Name"] == "no"
        assert "/tmp" in host["Tmpfs"]
        assert attrs["Config"]["User"] == "65534:65534"
        assert attrs["Config"]["Labels"][TENANT_LABEL] == tenant_id
        assert attrs["Config"]["Labels"][INSTANCE_LABEL] == active.bot_instance
    else:
        limits = Path(f"/proc/{rt.pid(tenant_id)}/limits").read_text()
        assert any(
            line.startswith("Max address space") and str(128 * MiB) in line
            for line in limits.splitlines()
        )


async def test_stop_removes_the_bot(active, db, make_client, start_worker) -> None:
    tenant_id, token = await add_tenant(db)
    client = await make_client(active)
    start_worker(settings_override=active, queues=["bots"])
    await command_done(client, token, await send(client, token, "start"))
    rt = await runtime(active)
    await running_bot(rt, tenant_id)

    await command_done(client, token, await send(client, token, "stop"))

    assert await asyncio.to_thread(bot_of, rt, tenant_id) is None
    status = await (await client.get("/api/v1/bot/status", headers=bearer(token))).json()
    assert status["desired"] == "stopped" and status["actual"] == "stopped"
    # Its lines were shipped before it was stopped, and outlive it.
    logs = await client.get("/api/v1/bot/logs?tail=1000", headers=bearer(token))
    assert logs.status == 200, await logs.text()
    assert (
        f"colmena-bot starting tenant={tenant_id} config_version=1" in (await logs.json())["lines"]
    )


async def test_restart_replaces_the_bot(active, db, make_client, start_worker) -> None:
    tenant_id, token = await add_tenant(db)
    client = await make_client(active)
    start_worker(settings_override=active, queues=["bots"])
    await command_done(client, token, await send(client, token, "start"))
    rt = await runtime(active)
    first = await running_bot(rt, tenant_id)

    done = await command_done(client, token, await send(client, token, "restart"))

    second = await running_bot(rt, tenant_id)
    assert second.bot_id != first.bot_id
    assert done["reason"] == "restart requested"


async def test_config_change_recreates_the_bot_with_the_new_config(
    active, db, make_client, start_worker
) -> None:
    tenant_id, token = await add_tenant(db, plan="pro")
    client = await make_client(active)
    start_worker(settings_override=active, queues=["bots"])
    await command_done(client, token, await send(client, token, "start"))
    rt = await runtime(active)
    first = await running_bot(rt, tenant_id)

    config = {"symbols": ["ETHUSDT", "BTCUSDT"], "mode": "live", "capital": "2500.50"}
    response = await client.put("/api/v1/bot/config", json=config, headers=bearer(token))
    assert response.status == 202, await response.text()
    body = await response.json()
    assert body["config_version"] == 2
    assert body["config"] == {**config, "capital": "2500.5"}  # normalised decimal string
    await command_done(client, token, body["command_id"])

    second = await running_bot(rt, tenant_id)
    assert second.bot_id != first.bot_id and second.config_version == 2
    env = environment(rt, tenant_id, second.bot_id)
    assert json.loads(env["BOT_CONFIG"]) == body["config"] and env["BOT_CONFIG_VERSION"] == "2"
    same = await client.put("/api/v1/bot/config", json=config, headers=bearer(token))
    assert same.status == 200 and (await same.json())["changed"] is False


async def test_logs_are_shipped_and_read_through_the_api_without_a_runtime(
    kind, active, resources, db, make_client
) -> None:
    tenant_id, rt = await _running(resources, db)
    _, token = await _token_of(db, tenant_id)
    client = await make_client(active)
    await until_log(rt, tenant_id, "colmena-heartbeat")
    assert (await client.get("/api/v1/bot/logs", headers=bearer(token))).status == 404

    assert await ship_logs(resources) > 0

    lines = (await (await client.get("/api/v1/bot/logs?tail=500", headers=bearer(token))).json())[
        "lines"
    ]
    assert lines[0] == f"colmena-bot starting tenant={tenant_id} config_version=1"
    one = await (await client.get("/api/v1/bot/logs?tail=1", headers=bearer(token))).json()
    assert one["lines"] == lines[-1:]
    for bad in ("abc", "-1", "5000", "1.5"):
        refused = await client.get(f"/api/v1/bot/logs?tail={bad}", headers=bearer(token))
        assert refused.status == 422, bad
        assert (await refused.json())["error"]["fields"][0]["field"] == "tail"
    assert not _runtimes_in(client.server.app)


async def test_shipping_twice_or_after_a_restart_adds_no_line_twice(
    kind, active, resources, db
) -> None:
    tenant_id, rt = await _running(resources, db)
    await until_log(rt, tenant_id, "colmena-heartbeat")
    await ship_logs(resources)
    await ship_logs(resources)  # at once: nothing new, or only lines written in between
    restarted = resources_for(active)  # a new shipper process: only the database remembers
    await restarted.start()
    try:
        if kind == "docker":
            close_runtimes()  # and a new engine client
        await until_log(await runtime(active), tenant_id, "colmena-heartbeat")

        async def shipped_more() -> int:
            return await ship_logs(restarted)

        await wait_for(shipped_more)
    finally:
        await restarted.close()

    stored = await bot_logs.newest(db, tenant_id, 10_000)
    written = await asyncio.to_thread((await runtime(active)).logs, tenant_id, 10_000)
    assert [line.seq for line in stored] == list(range(1, len(stored) + 1))
    assert [line.line for line in stored] == written[: len(stored)]  # in order, none twice


async def test_old_lines_expire_with_the_plans_log_retention(resources, db) -> None:
    free, _ = await add_tenant(db, plan="free")  # keeps logs 1 day
    pro, _ = await add_tenant(db, plan="pro")  # 7 days
    now = datetime.now(UTC)
    for tenant_id in (free, pro):
        await bot_logs.append(
            db,
            tenant_id,
            1,
            [(now - timedelta(days=3), "three days old"), (now - timedelta(hours=1), "recent")],
        )
    await ship_logs(resources)  # each pass also drops what the plan no longer keeps
    assert [line.line for line in await bot_logs.newest(db, free, 10)] == ["recent"]
    assert len(await bot_logs.newest(db, pro, 10)) == 2


async def test_shipping_keeps_only_the_newest_lines(active, db) -> None:
    few = resources_for(active.model_copy(update={"bot_log_max_lines": 3}))
    await few.start()
    try:
        tenant_id, rt = await _running(few, db)
        await until_log(rt, tenant_id, "colmena-heartbeat")
        shipped = await ship_logs(few)

        async def beyond_the_limit() -> int:
            return await ship_logs(few)

        await wait_for(beyond_the_limit)
    finally:
        await few.close()
    stored = await bot_logs.newest(db, tenant_id, 100)
    assert len(stored) == 3 and shipped >= 3
    assert stored[-1].seq > 3 and [line.seq for line in stored] == list(
        range(stored[-1].seq - 2, stored[-1].seq + 1)
    )
    written = await asyncio.to_thread(rt.logs, tenant_id, 10_000)
    assert [line.line for line in stored] == written[stored[0].seq - 1 : stored[-1].seq]


async def test_the_log_stream_sends_new_lines_and_frees_its_slot(
    kind, active, resources, db, make_client
) -> None:
    tenant_id, rt = await _running(resources, db)
    _, token = await _token_of(db, tenant_id)
    client = await make_client(active)
    await until_log(rt, tenant_id, "colmena-heartbeat")
    await ship_logs(resources)
    stored = await bot_logs.newest(db, tenant_id, 10_000)

    stream = await client.get("/api/v1/bot/logs/stream?tail=1", headers=bearer(token))
    assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
    first = await asyncio.wait_for(stream.content.readline(), 10)
    assert first == b"data: " + stored[-1].line.encode() + b"\n"

    async def shipped_more() -> int:
        return await ship_logs(resources)

    await wait_for(shipped_more)
    newer = (await bot_logs.after(db, tenant_id, stored[-1].seq, 1))[0]
    seen = []
    while b"data: " + newer.line.encode() + b"\n" not in seen:
        seen.append(await asyncio.wait_for(stream.content.readline(), 10))
    assert _open_streams(client.server.app, tenant_id) == 1
    stream.close()  # the client goes away: its slot comes back

    async def slot_free() -> bool:
        return _open_streams(client.server.app, tenant_id) == 0

    await wait_for(slot_free, timeout=10)


# The reconciler ---------------------------------------------------------------------------------


def _sub_apps(app: web.Application) -> list[web.Application]:
    return [r.get_info()["app"] for r in app.router.resources() if "app" in r.get_info()]


def _runtimes_in(app: web.Application) -> list[object]:
    """Whatever runs bots that the ingress app (or one of its sub-apps) holds."""
    held = [value for one in (app, *_sub_apps(app)) for value in one.values()]
    return [v for v in held if isinstance(v, DockerRuntime | ProcessRuntime | docker.DockerClient)]


def _open_streams(app: web.Application, tenant_id: str) -> int:
    """Log streams the ingress counts as open for the tenant (its per-tenant cap)."""
    return sum(
        one[LOG_STREAMS].open_count(tenant_id) for one in _sub_apps(app) if LOG_STREAMS in one
    )


async def _token_of(db, tenant_id: str) -> tuple[str, str]:
    """A fresh API token for a tenant made by `_running`."""
    token = new_token()
    await store.set_token(db, tenant_id, token_digest(token))
    return tenant_id, token


async def _running(resources: Resources, db, plan: str = "free") -> tuple[str, Runtime]:
    tenant_id, _ = await add_tenant(db, plan=plan)
    await store.set_desired(db, tenant_id, "running", reset_restarts=True)
    step = await reconcile_one(resources, tenant_id)
    assert step is not None and step.do.value == "start"
    rt = await runtime(resources.settings)
    await running_bot(rt, tenant_id)
    return tenant_id, rt


async def test_killed_bot_is_restarted_after_its_backoff(active, resources, db) -> None:
    slow = active.model_copy(update={"bot_restart_backoff_seconds": 1.5})
    resources.settings = slow
    tenant_id, rt = await _running(resources, db)
    first = await running_bot(rt, tenant_id)
    restarts_before = counter("colmena_bot_restarts_total")

    kill_from_outside(rt, tenant_id, first.bot_id)

    async def exited():
        bot = await asyncio.to_thread(bot_of, rt, tenant_id)
        return bot is not None and bot.state is BotState.EXITED

    await wait_for(exited)
    outcome = await reconcile_all(resources)
    assert outcome["wait"] == 1  # backing off, not restarted at once
    bot_row = await store.get_bot(db, tenant_id)
    assert (
        bot_row.observed == "backoff"
        and bot_row.next_restart_at is not None
        and bot_row.last_exit_code == 137
    )

    async def restarted():
        await reconcile_due(resources)
        return (await store.get_bot(db, tenant_id)).restarts_total == 1

    await wait_for(restarted, timeout=15)
    second = await running_bot(rt, tenant_id)
    assert second.bot_id != first.bot_id
    assert counter("colmena_bot_restarts_total") == restarts_before + 1
    assert (await store.get_bot(db, tenant_id)).next_restart_at is None


async def test_crashing_fast_ends_in_crashloop_until_reset(active, resources, db, capsys) -> None:
    tenant_id, rt = await _running(resources, db)
    crashloops_before = counter("colmena_bot_crashloops_total")
    handlers = logging.getLogger().handlers[:]
    configure_logging(dev=False)
    try:
        for _ in range(active.bot_restart_max + 1):
            bot = await running_bot(rt, tenant_id)
            kill_from_outside(rt, tenant_id, bot.bot_id)

            async def acted(bot_id=bot.bot_id):
                await reconcile_all(resources)
                row = await store.get_bot(db, tenant_id)
                current = await asyncio.to_thread(bot_of, rt, tenant_id)
                return row.crashloop or (current is not None and current.bot_id != bot_id)

            await wait_for(acted, timeout=20)
        logged = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = handlers

    row = await store.get_bot(db, tenant_id)
    assert (
        row.crashloop
        and row.observed == "crashloop"
        and row.restarts_total == active.bot_restart_max
    )
    assert "restarts within" in row.crashloop_reason
    assert counter("colmena_bot_crashloops_total") == crashloops_before + 1
    errors = [
        json.loads(line)
        for line in logged.splitlines()
        if line.startswith("{") and "bot in crashloop" in line
    ]
    assert any(e["level"] == "error" and e["tenant_id"] == tenant_id for e in errors)

    assert (await reconcile_all(resources))["crashloop"] == 1  # no more restarts
    assert (await asyncio.to_thread(bot_of, rt, tenant_id)).state is BotState.EXITED

    await store.reset_restarts(db, tenant_id)  # `colmena bots reset`

    async def restarted_again():
        return (await reconcile_due(resources)) or (await reconcile_all(resources))["restart"]

    await wait_for(restarted_again, timeout=10)
    await running_bot(rt, tenant_id)
    assert not (await store.get_bot(db, tenant_id)).crashloop


async def test_deleted_bot_is_recreated_and_strangers_are_removed(
    kind, active, resources, db, request
) -> None:
    tenant_id, rt = await _running(resources, db)
    gone = await running_bot(rt, tenant_id)
    await asyncio.to_thread(rt.remove_bot, gone.bot_id, 1)  # behind colmena's back
    if kind == "docker":
        engine = request.getfixturevalue("docker_engine")
        stranger = engine.api.create_container(
            active.bot_image,
            labels={INSTANCE_LABEL: active.bot_instance},
            host_config=engine.api.create_host_config(network_mode="none"),
        )
        engine.api.start(stranger["Id"])
        expected_orphans = 1
    else:
        expected_orphans = 0
    # A bot for a tenant the database does not know: removed as well.
    from colmena.supervisor.reconciler import spec_for

    ghost = f"t-ghost{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(
        rt.start_bot, spec_for(ghost, {}, 1, memory_mb=64, cpu_millis=100, settings=active)
    )

    outcome = await reconcile_all(resources)

    assert outcome["orphan_removed"] == expected_orphans + 1
    assert outcome["start"] == 1
    recreated = await running_bot(rt, tenant_id)
    assert recreated.bot_id != gone.bot_id
    tenants = {bot.tenant_id for bot in await asyncio.to_thread(rt.list_bots)}
    assert tenants == {tenant_id}


async def test_plan_limits_changed_by_an_operator_recreate_the_bot(active, resources, db) -> None:
    tenant_id, rt = await _running(resources, db)
    first = await running_bot(rt, tenant_id)
    await db.execute("UPDATE plans SET memory_mb = 96 WHERE name = 'free'")

    assert (await reconcile_all(resources))["start"] == 1

    second = await running_bot(rt, tenant_id)
    assert second.bot_id != first.bot_id and second.config_hash != first.config_hash


async def test_commands_for_one_tenant_wait_for_each_other(
    active, db, make_client, start_worker
) -> None:
    busy, busy_token = await add_tenant(db)
    _, other_token = await add_tenant(db)
    client = await make_client(active)
    start_worker(settings_override=active, queues=["bots"], threads=4)
    # Someone (another command, the reconciler) is working on `busy` right now.
    async with store.tenant_lock(db, busy):
        busy_command = await send(client, busy_token, "start")
        other_command = await send(client, other_token, "start")
        await command_done(client, other_token, other_command)  # other tenants go on
        body = await (
            await client.get(f"/api/v1/commands/{busy_command}", headers=bearer(busy_token))
        ).json()
        assert body["status"] == "queued"
    await command_done(client, busy_token, busy_command)
    await running_bot(await runtime(active), busy)


async def test_bots_gauge_is_read_from_the_database_at_scrape_time(
    active, resources, db, make_client
) -> None:
    await _running(resources, db)
    await add_tenant(db)
    await reconcile_all(resources)
    client = await make_client(active)
    text = await ingress_metrics(client)
    assert 'colmena_bots{state="stopped"} 1.0' in text
    running = (
        'colmena_bots{state="running"} 1.0' in text or 'colmena_bots{state="unhealthy"} 1.0' in text
    )
    assert running
    assert "colmena_bot_reconcile_duration_seconds_count" in text


# Failures the restart policy handles besides crashes -------------------------------------------


def _json_lines(logged: str, event: str) -> list[dict]:
    return [
        json.loads(line) for line in logged.splitlines() if line.startswith("{") and event in line
    ]


async def test_a_bot_that_stops_beating_is_restarted_after_the_grace(
    active, resources, db, capsys
) -> None:
    resources.settings = active.model_copy(update={"bot_unhealthy_restart_seconds": 1.0})
    tenant_id, rt = await _running(resources, db)
    first = await running_bot(rt, tenant_id)
    await until_log(rt, tenant_id, "colmena-heartbeat ")
    assert (await store.get_bot(db, tenant_id)).unhealthy_since is None
    before = counter("colmena_bot_unhealthy_restarts_total")
    handlers = logging.getLogger().handlers[:]
    configure_logging(dev=False)
    try:
        # Frozen, not dead: it keeps running and writes nothing, as a wedged bot does.
        if isinstance(rt, ProcessRuntime):
            os.kill(rt.pid(tenant_id), signal.SIGSTOP)
        else:
            docker.from_env().api.kill(first.bot_id, signal="SIGSTOP")

        async def replaced():
            await reconcile_all(resources)
            current = await asyncio.to_thread(bot_of, rt, tenant_id)
            return current is not None and current.bot_id != first.bot_id

        await wait_for(replaced, timeout=30, interval=0.2)
        logged = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = handlers

    row = await store.get_bot(db, tenant_id)
    assert row.restarts_total == 1 and row.streak == 1 and row.unhealthy_since is None
    assert counter("colmena_bot_unhealthy_restarts_total") == before + 1
    [line] = _json_lines(logged, "unhealthy bot restarted")
    assert line["tenant_id"] == tenant_id and "no heartbeat since" in line["reason"]
    await until_log(rt, tenant_id, "colmena-heartbeat ")


@pytest.fixture
def cannot_start(docker_engine):
    """An image whose entrypoint the engine cannot exec."""
    image = image_from(docker_engine, '["/bin/no-such-bot"]', ("sh",))
    yield image
    docker_engine.images.remove(image, force=True)


@pytest.mark.docker
async def test_a_start_the_engine_refuses_backs_off_then_crashloops(
    settings, tmp_path, docker_engine, cannot_start, db, capsys
) -> None:
    active = bot_settings(
        settings,
        tmp_path,
        "docker",
        cannot_start,
        bot_restart_backoff_seconds=1.5,
        bot_restart_max_backoff_seconds=2.0,
    )
    resources = resources_for(active)
    await resources.start()
    handlers = logging.getLogger().handlers[:]
    configure_logging(dev=False)
    before = counter("colmena_bot_start_failures_total")
    try:
        tenant_id, _ = await add_tenant(db)
        await store.set_desired(db, tenant_id, "running", reset_restarts=True)
        step = await reconcile_one(resources, tenant_id)
        assert step is not None and step.do.value == "start_failed"
        row = await store.get_bot(db, tenant_id)
        assert row.observed == "start_failed" and "no-such-bot" in row.start_error
        assert row.next_restart_at is not None and row.start_failed_at is not None
        assert counter("colmena_bot_start_failures_total") == before + 1
        # Not retried on every pass: the backoff holds it ...
        assert (await reconcile_all(resources))["wait"] == 1
        assert counter("colmena_bot_start_failures_total") == before + 1
        assert await asyncio.to_thread(bot_of, await runtime(active), tenant_id) is None

        # ... and after the intensity limit it gives up and says why.
        async def given_up():
            await reconcile_due(resources)
            return (await store.get_bot(db, tenant_id)).crashloop

        await wait_for(given_up, timeout=30, interval=0.1)
        logged = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = handlers
        await resources.close()
        close_runtimes()
        remove_instance(docker_engine, active.bot_instance)

    row = await store.get_bot(db, tenant_id)
    assert row.observed == "crashloop" and row.restarts_total == active.bot_restart_max
    # The tenant sees the crashloop reason: the kind of failure, not the engine's words.
    assert "restarts within" in row.crashloop_reason
    assert "the bot's program could not be run" in row.crashloop_reason
    assert "no-such-bot" not in row.crashloop_reason and "no-such-bot" in row.start_error
    assert counter("colmena_bot_start_failures_total") == before + 1 + active.bot_restart_max
    failures = _json_lines(logged, "bot failed to start")
    assert len(failures) == 1 + active.bot_restart_max
    assert all(f["level"] == "error" and "no-such-bot" in f["error"] for f in failures)
    # A start from the tenant tries again at once.
    await store.set_desired(db, tenant_id, "running", reset_restarts=True)
    row = await store.get_bot(db, tenant_id)
    assert row.start_failed_at is None and not row.crashloop


@pytest.mark.docker
async def test_a_refused_start_is_told_to_the_tenant_without_the_engines_words(
    settings, tmp_path, docker_engine, cannot_start, db, make_client
) -> None:
    active = bot_settings(settings, tmp_path, "docker", cannot_start)
    resources = resources_for(active)
    await resources.start()
    tenant_id, token = await add_tenant(db)
    client = await make_client(active)
    try:
        status = await (await client.get("/api/v1/bot/status", headers=bearer(token))).json()
        assert (status["start_failed_at"], status["start_error"]) == (None, None)

        sent = await client.post("/api/v1/bot/start", headers=bearer(token))
        command_id = (await sent.json())["command_id"]
        await run_command(resources, command_id)
        command = await client.get(f"/api/v1/commands/{command_id}", headers=bearer(token))
        status_answer = await client.get("/api/v1/bot/status", headers=bearer(token))
        admin_answer = await client.get("/api/v1/admin/bots", headers=bearer(ADMIN_TOKEN))
        documented = Checked(client)  # the failure as the OpenAPI document describes it
        for path, caller in (("/api/v1/bot/status", token), ("/api/v1/admin/bots", ADMIN_TOKEN)):
            assert (await documented.call(path, "GET", headers=bearer(caller)))[0] == 200
    finally:
        await resources.close()
        close_runtimes()
        remove_instance(docker_engine, active.bot_instance)

    row = await store.get_bot(db, tenant_id)
    assert "no-such-bot" in row.start_error  # the engine's words, kept for operators
    told = await command.json()
    assert told["status"] == "failed"
    assert told["reason"] == "start failed: the bot's program could not be run"
    status = await status_answer.json()
    assert status["actual"] == "start_failed"
    assert status["start_error"] == {
        "code": "program_cannot_run",
        "message": "the bot's program could not be run",
    }
    assert datetime.fromisoformat(status["start_failed_at"]) == row.start_failed_at
    assert status["next_restart_at"] is not None
    [listed] = [b for b in (await admin_answer.json())["bots"] if b["tenant"] == tenant_id]
    assert listed["start_error"] == status["start_error"]
    for answer in (command, status_answer, admin_answer):
        text = await answer.text()
        assert "no-such-bot" not in text and "runc" not in text and "OCI" not in text


async def test_an_unexpected_failure_reaches_the_tenant_in_fixed_words(
    settings, tmp_path, db, make_client, monkeypatch
) -> None:
    """What the supervisor did not foresee (here: the engine gone) is told to the tenant without
    its text, which can name host paths; the operator's log line has it whole."""
    active = bot_settings(settings, tmp_path, "process", None)
    resources = resources_for(active)
    await resources.start()
    _, token = await add_tenant(db)
    client = await make_client(active)

    async def engine_gone(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("cannot reach /var/run/docker.sock on host-7")

    monkeypatch.setattr(bots_actors, "converge", engine_gone)
    try:
        sent = await client.post("/api/v1/bot/start", headers=bearer(token))
        command_id = (await sent.json())["command_id"]
        with capture_logs() as logs:
            await run_command(resources, command_id)
        command = await client.get(f"/api/v1/commands/{command_id}", headers=bearer(token))
        told = await command.json()
    finally:
        await resources.close()
        close_runtimes()
    assert told["status"] == "failed"
    assert told["reason"] == bots_actors.COMMAND_FAILED_REASON
    assert "docker.sock" not in json.dumps(told) and "host-7" not in json.dumps(told)
    [line] = _json_lines(logs.text(), "bot command failed")
    assert line["level"] == "error" and "/var/run/docker.sock on host-7" in line["error"]
