"""Bot runtimes against the real Docker engine and real local processes.

Behaviour tests run on both runtimes; hardening and limit checks inspect what each one
actually applied (the container's HostConfig, the process's /proc limits).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import docker
import pytest

from colmena.supervisor.bot_image import REPOSITORY, bot_script, ensure_bot_image
from colmena.supervisor.docker_runtime import DockerRuntime, _lines_after, docker_available
from colmena.supervisor.health import (
    check_health,
    is_healthy,
    last_heartbeat,
    parse_heartbeat,
)
from colmena.supervisor.process_runtime import ProcessRuntime
from colmena.supervisor.runtime import (
    CONFIG_HASH_LABEL,
    INSTANCE_LABEL,
    TENANT_LABEL,
    BotLimits,
    BotNotFound,
    BotSpec,
    BotState,
    BotStatus,
    LogPosition,
    Runtime,
)
from tests.conftest import require_docker

T = TypeVar("T")
MiB = 1024 * 1024
LIMITS = BotLimits(memory_bytes=64 * MiB, cpu_millis=250, pids=32)
FAST_HEARTBEAT = {"BOT_HEARTBEAT_SECONDS": "1"}
SECRET = "binance-secret-9f8e7d6c5b4a"
BOT_SCRIPT = Path(__file__).resolve().parents[1] / "ops" / "bot" / "bot.sh"


def wait_for(probe: Callable[[], T | None], timeout_s: float = 15.0, what: str = "") -> T:
    """Poll `probe` until it returns something truthy, failing at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what or probe}")
        time.sleep(0.1)


def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:10]}"


def spec(tenant_id: str, version: int = 1, **env: str) -> BotSpec:
    return BotSpec(
        tenant_id=tenant_id,
        config={"symbols": ["BTCUSDT"], "mode": "paper", "capital": "1000.00"},
        config_version=version,
        limits=LIMITS,
        env={**FAST_HEARTBEAT, **env},
        secrets={"binance": SECRET},
    )


def bot_of(runtime: Runtime, tenant_id: str) -> BotStatus | None:
    return next((b for b in runtime.list_bots() if b.tenant_id == tenant_id), None)


def exited(runtime: Runtime, tenant_id: str) -> BotStatus | None:
    bot = bot_of(runtime, tenant_id)
    return bot if bot is not None and bot.state is BotState.EXITED else None


def heartbeat_seen(runtime: Runtime, tenant_id: str) -> datetime | None:
    return last_heartbeat(runtime.logs(tenant_id, tail=50))


_engine: list[docker.DockerClient] = []


def engine() -> docker.DockerClient:
    """One client for the module, also reachable from helpers that get only a runtime."""
    if not _engine:
        _engine.append(docker.from_env(timeout=60))
    return _engine[0]


@pytest.fixture(scope="module")
def docker_client() -> Iterator[docker.DockerClient]:
    require_docker()
    yield engine()
    _engine.pop().close()


@pytest.fixture(scope="module")
def bot_image(docker_client: docker.DockerClient) -> str:
    return ensure_bot_image(docker_client)


@pytest.fixture
def docker_runtime(docker_client: docker.DockerClient, bot_image: str) -> Iterator[DockerRuntime]:
    instance = f"test-{uuid.uuid4().hex[:8]}"
    runtime = DockerRuntime(docker_client, image=bot_image, network_mode="none", instance=instance)
    yield runtime
    for row in docker_client.api.containers(
        all=True, filters={"label": [f"{INSTANCE_LABEL}={instance}"]}
    ):
        docker_client.api.remove_container(row["Id"], force=True)


@pytest.fixture
def process_runtime(tmp_path: Path) -> Iterator[ProcessRuntime]:
    runtime = ProcessRuntime(BOT_SCRIPT, tmp_path / "bots")
    yield runtime
    runtime.close()


@pytest.fixture(params=[pytest.param("docker", marks=pytest.mark.docker), "process"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    chosen: Runtime = request.getfixturevalue(f"{request.param}_runtime")
    return chosen


def bot_environment(runtime: Runtime, tenant_id: str, bot: BotStatus) -> dict[str, str]:
    """The environment the bot really has, read from outside it."""
    if isinstance(runtime, DockerRuntime):
        env = engine().api.inspect_container(bot.bot_id)["Config"]["Env"]
    else:
        assert isinstance(runtime, ProcessRuntime)
        # Read it once the bot runs, not while the limiting shell is still exec'ing it.
        wait_for(lambda: runtime.logs(tenant_id), what="the bot to start")
        raw = Path(f"/proc/{runtime.pid(tenant_id)}/environ").read_bytes()
        env = [item.decode() for item in raw.split(b"\0") if item]
    return dict(item.split("=", 1) for item in env)


def test_start_runs_the_bot_with_its_config_and_heartbeats(runtime: Runtime) -> None:
    tenant_id = tenant()
    started = runtime.start_bot(spec(tenant_id, version=3))

    assert started.state is BotState.RUNNING
    assert started.tenant_id == tenant_id
    assert started.config_version == 3
    assert started.config_hash == spec(tenant_id, version=3).config_hash
    listed = bot_of(runtime, tenant_id)
    assert listed is not None and listed.bot_id == started.bot_id
    assert listed.state is BotState.RUNNING

    beat = wait_for(lambda: heartbeat_seen(runtime, tenant_id), what="a heartbeat")
    assert abs(datetime.now(UTC) - beat) < timedelta(seconds=30)
    lines = runtime.logs(tenant_id)
    assert f"colmena-bot starting tenant={tenant_id} config_version=3" in lines
    assert any(line.startswith("colmena-bot config ") and "BTCUSDT" in line for line in lines)
    assert check_health(runtime, listed, datetime.now(UTC))


def keys_inside(runtime: Runtime, tenant_id: str, bot: BotStatus, path: str) -> dict[str, str]:
    """The keys file as the bot reads it: in Docker as the bot's user, inside the container."""
    if isinstance(runtime, DockerRuntime):
        api = engine().api
        exec_id = api.exec_create(bot.bot_id, ["cat", path], user="65534:65534")["Id"]
        text = api.exec_start(exec_id).decode()
        assert api.exec_inspect(exec_id)["ExitCode"] == 0, text
    else:
        text = Path(path).read_text()
    keys: dict[str, str] = json.loads(text)
    return keys


def test_keys_reach_the_keys_file_never_the_environment_or_the_log(runtime: Runtime) -> None:
    tenant_id = tenant()
    bot = runtime.start_bot(spec(tenant_id))
    wait_for(
        lambda: "colmena-bot keys loaded (" in "\n".join(runtime.logs(tenant_id)),
        what="the bot to load its keys",
    )
    env = bot_environment(runtime, tenant_id, bot)

    assert not any(SECRET in value for value in env.values())
    assert env["BOT_TENANT"] == tenant_id
    assert '"BTCUSDT"' in env["BOT_CONFIG"]
    assert keys_inside(runtime, tenant_id, bot, env["BOT_KEYS_FILE"]) == {"binance": SECRET}
    wait_for(lambda: len(runtime.logs(tenant_id)) >= 4, what="several log lines")
    assert not any(SECRET in line for line in runtime.logs(tenant_id, tail=1000))
    assert SECRET not in repr(spec(tenant_id))


def test_a_bot_without_keys_gets_an_empty_keys_file(runtime: Runtime) -> None:
    tenant_id = tenant()
    bot = runtime.start_bot(replace(spec(tenant_id), secrets={}))
    wait_for(
        lambda: "colmena-bot keys loaded (2 bytes)" in runtime.logs(tenant_id),
        what="the bot to load its keys",
    )
    env = bot_environment(runtime, tenant_id, bot)
    assert keys_inside(runtime, tenant_id, bot, env["BOT_KEYS_FILE"]) == {}


def test_stop_is_prompt_and_leaves_nothing(runtime: Runtime) -> None:
    tenant_id = tenant()
    runtime.start_bot(spec(tenant_id))
    wait_for(lambda: heartbeat_seen(runtime, tenant_id), what="a heartbeat")

    began = time.monotonic()
    runtime.stop_bot(tenant_id, timeout_s=10)
    # Well under the 10 s grace: the bot honoured SIGTERM instead of being killed.
    assert time.monotonic() - began < 5
    assert bot_of(runtime, tenant_id) is None
    with pytest.raises(BotNotFound):
        runtime.logs(tenant_id)
    runtime.stop_bot(tenant_id)  # stopping what is gone is a no-op


def test_start_again_replaces_the_bot_with_the_new_config(runtime: Runtime) -> None:
    tenant_id = tenant()
    first = runtime.start_bot(spec(tenant_id, version=1))
    second = runtime.start_bot(spec(tenant_id, version=2))

    mine = [b for b in runtime.list_bots() if b.tenant_id == tenant_id]
    assert [b.bot_id for b in mine] == [second.bot_id]
    assert second.bot_id != first.bot_id
    assert (second.config_version, second.state) == (2, BotState.RUNNING)
    assert second.config_hash != first.config_hash
    wait_for(
        lambda: (
            f"colmena-bot starting tenant={tenant_id} config_version=2" in runtime.logs(tenant_id)
        ),
        what="the new bot's banner",
    )


def test_a_crash_is_reported_with_its_exit_code(runtime: Runtime) -> None:
    tenant_id = tenant()
    runtime.start_bot(spec(tenant_id, BOT_CRASH_AFTER="1", BOT_CRASH_CODE="7"))

    bot = wait_for(lambda: exited(runtime, tenant_id), what="the bot to crash")
    assert bot.exit_code == 7
    assert bot.started_at is not None and bot.finished_at is not None
    assert bot.started_at <= bot.finished_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert "colmena-bot crashing with code 7 as told" in runtime.logs(tenant_id)
    assert not check_health(runtime, bot, datetime.now(UTC))


def test_a_kill_from_outside_reports_the_signal(runtime: Runtime) -> None:
    tenant_id = tenant()
    bot = runtime.start_bot(spec(tenant_id))
    if isinstance(runtime, DockerRuntime):
        engine().api.kill(bot.bot_id, signal="SIGKILL")
    else:
        assert isinstance(runtime, ProcessRuntime)
        os.kill(runtime.pid(tenant_id), signal.SIGKILL)

    dead = wait_for(lambda: exited(runtime, tenant_id), what="the bot to die")
    assert dead.exit_code == 128 + signal.SIGKILL


def test_logs_since_reads_each_line_once_from_where_it_stopped(runtime: Runtime) -> None:
    tenant_id = tenant()
    bot = runtime.start_bot(spec(tenant_id))
    wait_for(lambda: heartbeat_seen(runtime, tenant_id), what="a heartbeat")

    first = runtime.logs_since(bot.bot_id, None)
    texts = [entry.text for entry in first.entries]
    assert texts[0] == f"colmena-bot starting tenant={tenant_id} config_version=1"
    assert first.position.bot_id == bot.bot_id
    assert all(entry.logged_at <= datetime.now(UTC) for entry in first.entries)
    # The same position gives the same lines again (what makes a retried ship exact) ...
    assert [e.text for e in runtime.logs_since(bot.bot_id, None).entries][: len(texts)] == texts

    # ... and the new position only what came after, in order, nothing twice.
    def more_beats() -> list[str] | None:
        batch = runtime.logs_since(bot.bot_id, first.position)
        new = [entry.text for entry in batch.entries]
        return new if sum(parse_heartbeat(t) is not None for t in new) >= 2 else None

    later = wait_for(more_beats, what="two more heartbeats")
    whole = runtime.logs(tenant_id, tail=10_000)
    assert whole[: len(texts) + len(later)] == texts + later


def test_logs_since_a_position_of_another_bot_reads_from_the_start(runtime: Runtime) -> None:
    tenant_id = tenant()
    old = runtime.start_bot(spec(tenant_id, version=1))
    wait_for(lambda: runtime.logs_since(old.bot_id, None).entries, what="the first bot's lines")
    stale = runtime.logs_since(old.bot_id, None).position
    new = runtime.start_bot(spec(tenant_id, version=2))

    def banner() -> list[str] | None:
        texts = [entry.text for entry in runtime.logs_since(new.bot_id, stale).entries]
        return texts or None

    texts = wait_for(banner, what="the new bot's lines")
    assert texts[0] == f"colmena-bot starting tenant={tenant_id} config_version=2"
    with pytest.raises(BotNotFound):
        runtime.logs_since(old.bot_id, stale)  # replaced: gone with its log


def test_logs_since_keeps_the_last_words_of_a_crashed_bot(runtime: Runtime) -> None:
    tenant_id = tenant()
    bot = runtime.start_bot(spec(tenant_id, BOT_CRASH_AFTER="1", BOT_CRASH_CODE="7"))
    wait_for(lambda: exited(runtime, tenant_id), what="the bot to crash")
    batch = runtime.logs_since(bot.bot_id, LogPosition(bot.bot_id))
    texts = [entry.text for entry in batch.entries]
    assert texts[-1] == "colmena-bot crashing with code 7 as told"
    assert runtime.logs_since(bot.bot_id, batch.position).entries == []


def test_docker_positions_count_lines_that_share_a_timestamp() -> None:
    """The engine resends the whole second asked for; exact stamps and counts drop repeats."""
    text = (
        "2030-01-01T00:00:01.5Z a\n"
        "2030-01-01T00:00:01.5Z b\n"
        "2030-01-01T00:00:01.500000001Z c\n"
        "2030-01-01T00:00:01.500000001Z d\n"
    )
    read_first = "".join(text.splitlines(keepends=True)[:2])  # a and b were there at first
    first = _lines_after(read_first, "bot", None)
    assert [entry.text for entry in first.entries] == ["a", "b"]
    assert first.position == LogPosition("bot", 1_893_456_001_500_000_000, 2)

    resumed = _lines_after(text, "bot", first.position)
    assert [entry.text for entry in resumed.entries] == ["c", "d"]
    assert resumed.position == LogPosition("bot", 1_893_456_001_500_000_001, 2)
    assert _lines_after(text, "bot", resumed.position).entries == []
    assert resumed.entries[0].logged_at == datetime(2030, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)


def test_unknown_tenant_has_no_logs(runtime: Runtime) -> None:
    with pytest.raises(BotNotFound):
        runtime.logs(tenant())
    with pytest.raises(BotNotFound):
        runtime.logs_since("no-such-bot", None)


def test_tenant_ids_that_cannot_name_a_bot_are_refused(runtime: Runtime) -> None:
    with pytest.raises(ValueError):
        runtime.start_bot(spec("../escape"))


@pytest.mark.docker
def test_docker_applies_plan_limits_and_hardening(
    docker_runtime: DockerRuntime, docker_client: docker.DockerClient
) -> None:
    tenant_id = tenant()
    bot = docker_runtime.start_bot(spec(tenant_id))
    attrs = docker_client.api.inspect_container(bot.bot_id)
    host = attrs["HostConfig"]

    assert host["Memory"] == 64 * MiB
    assert host["MemorySwap"] == 64 * MiB
    assert host["NanoCpus"] == 250_000_000
    assert host["PidsLimit"] == 32
    assert host["ReadonlyRootfs"] is True
    assert "/tmp" in host["Tmpfs"]
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["NetworkMode"] == "none"
    assert host["RestartPolicy"]["Name"] == "no"
    assert attrs["Config"]["User"] == "65534:65534"
    assert attrs["Config"]["Labels"][TENANT_LABEL] == tenant_id
    assert attrs["Config"]["Labels"][CONFIG_HASH_LABEL] == bot.config_hash
    assert attrs["State"]["Running"] is True


@pytest.mark.docker
def test_docker_lists_a_labelled_container_without_tenant_so_it_can_be_removed(
    docker_runtime: DockerRuntime, docker_client: docker.DockerClient, bot_image: str
) -> None:
    tenant_id = tenant()
    docker_runtime.start_bot(spec(tenant_id))
    stray = docker_client.api.create_container(
        bot_image, labels={INSTANCE_LABEL: docker_runtime.instance}, environment=FAST_HEARTBEAT
    )

    orphans = [b for b in docker_runtime.list_bots() if b.tenant_id is None]
    assert [b.bot_id for b in orphans] == [stray["Id"]]
    assert orphans[0].state is BotState.CREATED
    docker_runtime.remove_bot(stray["Id"])
    assert all(b.tenant_id is not None for b in docker_runtime.list_bots())
    assert bot_of(docker_runtime, tenant_id) is not None


@pytest.mark.docker
def test_docker_runtimes_of_other_instances_are_invisible(
    docker_runtime: DockerRuntime, docker_client: docker.DockerClient, bot_image: str
) -> None:
    neighbour = DockerRuntime(
        docker_client, image=bot_image, instance=f"other-{uuid.uuid4().hex[:8]}"
    )
    tenant_id = tenant()
    docker_runtime.start_bot(spec(tenant_id))
    try:
        assert neighbour.list_bots() == []
        assert bot_of(docker_runtime, tenant_id) is not None
    finally:
        docker_runtime.stop_bot(tenant_id)


def test_docker_available_is_false_without_an_engine(tmp_path: Path) -> None:
    assert docker_available(f"unix://{tmp_path}/no-engine.sock", timeout_s=1) is False


@pytest.mark.docker
def test_bot_image_is_reused_and_runs_as_nobody(
    docker_client: docker.DockerClient, bot_image: str
) -> None:
    assert bot_image.startswith(f"{REPOSITORY}:")
    assert ensure_bot_image(docker_client) == bot_image
    config = docker_client.images.get(bot_image).attrs["Config"]
    assert config["User"] == "65534:65534"
    assert config["Cmd"] == ["/bin/sh", "/bot/bot.sh"]
    assert bot_script() == BOT_SCRIPT.read_bytes()


def test_process_runtime_applies_rlimits(process_runtime: ProcessRuntime) -> None:
    tenant_id = tenant()
    process_runtime.start_bot(spec(tenant_id))
    # The shell sets the limits before it becomes the bot: wait for the bot's first words.
    wait_for(lambda: process_runtime.logs(tenant_id), what="the bot to start")
    limits = Path(f"/proc/{process_runtime.pid(tenant_id)}/limits").read_text()
    rows = {line[:26].strip(): line[26:].split() for line in limits.splitlines()[1:]}

    assert rows["Max address space"][:2] == [str(64 * MiB), str(64 * MiB)]
    assert rows["Max cpu time"][:2] == ["600", "600"]
    assert rows["Max core file size"][:2] == ["0", "0"]
    assert rows["Max open files"][:2] == ["256", "256"]


def test_health_needs_a_running_bot_and_a_recent_heartbeat() -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    running = BotStatus("b", "t", BotState.RUNNING, 1, "h")
    stopped = BotStatus("b", "t", BotState.EXITED, 1, "h", exit_code=0)
    lines = [
        f"colmena-heartbeat {int((now - timedelta(seconds=90)).timestamp())}",
        "colmena-heartbeat not-a-number",
        "something colmena-heartbeat 1",
        f"colmena-heartbeat {int((now - timedelta(seconds=30)).timestamp())}",
    ]

    beat = last_heartbeat(lines)
    assert beat == now - timedelta(seconds=30)
    assert is_healthy(running, beat, now)
    assert not is_healthy(running, beat, now + timedelta(seconds=31))
    assert not is_healthy(stopped, beat, now)
    assert not is_healthy(running, last_heartbeat(["colmena-bot starting"]), now)
