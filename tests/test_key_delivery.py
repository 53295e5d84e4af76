"""Provider keys reach a bot only as its keys file: never a container config, an inspect
output, a file on the engine's disk, an environment or a command line on the host.

Each test uses a key of its own, so finding it anywhere can only mean this bot leaked it.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import docker
import pytest

from colmena.supervisor.bot_image import ensure_bot_image
from colmena.supervisor.docker_runtime import DockerRuntime
from colmena.supervisor.key_delivery import CONTAINER_KEYS_DIR, CONTAINER_KEYS_FILE
from colmena.supervisor.process_runtime import ProcessRuntime
from colmena.supervisor.runtime import (
    INSTANCE_LABEL,
    BotLimits,
    BotSpec,
    BotStartFailed,
    BotState,
)
from tests.bots_support import image_from
from tests.conftest import require_docker
from tests.test_runtimes import BOT_SCRIPT, bot_of, wait_for

MiB = 1024 * 1024
NOBODY = "65534:65534"


def secret() -> str:
    return f"key-{uuid.uuid4().hex}"


def spec(tenant_id: str, keys: dict[str, str]) -> BotSpec:
    return BotSpec(
        tenant_id=tenant_id,
        config={"symbols": ["BTCUSDT"], "mode": "paper", "capital": "1000.00"},
        config_version=1,
        limits=BotLimits(memory_bytes=64 * MiB, cpu_millis=250, pids=32),
        env={"BOT_HEARTBEAT_SECONDS": "1"},
        secrets=keys,
    )


def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:10]}"


def host_processes_showing(text: str) -> list[str]:
    """Every host process whose environment or command line holds `text` (we are root: all)."""
    needle = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        for part in ("environ", "cmdline"):
            try:
                if needle in (entry / part).read_bytes():
                    found.append(f"{entry.name}/{part}")
            except OSError:
                continue  # gone meanwhile, or a kernel thread
    return found


def files_holding(root: Path, text: str) -> list[Path]:
    needle = text.encode()
    found = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                found.append(path)
        except OSError:
            continue
    return found


def keys_loaded(lines: list[str]) -> bool:
    return any(line.startswith("colmena-bot keys loaded (") for line in lines)


# Docker ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    require_docker()
    client = docker.from_env(timeout=60)
    yield client
    client.close()


@pytest.fixture
def docker_runtime(engine: docker.DockerClient) -> Iterator[DockerRuntime]:
    instance = f"test-{uuid.uuid4().hex[:8]}"
    runtime = DockerRuntime(
        engine, image=ensure_bot_image(engine), network_mode="none", instance=instance
    )
    yield runtime
    for row in engine.api.containers(all=True, filters={"label": [f"{INSTANCE_LABEL}={instance}"]}):
        engine.api.remove_container(row["Id"], force=True)


def run_in(engine: docker.DockerClient, bot_id: str, *command: str) -> tuple[int, str]:
    api = engine.api
    exec_id = api.exec_create(bot_id, list(command), user=NOBODY)["Id"]
    output = api.exec_start(exec_id).decode()
    code: int = api.exec_inspect(exec_id)["ExitCode"]
    return code, output


@pytest.mark.docker
def test_docker_keys_are_in_no_config_inspect_disk_or_process_listing(
    docker_runtime: DockerRuntime, engine: docker.DockerClient
) -> None:
    key, tenant_id = secret(), tenant()
    bot = docker_runtime.start_bot(spec(tenant_id, {"binance": key}))
    wait_for(lambda: keys_loaded(docker_runtime.logs(tenant_id)), what="the bot to load its keys")
    attrs = engine.api.inspect_container(bot.bot_id)

    # Nothing the engine shows about the container holds the key: not Config.Env, Cmd,
    # Entrypoint, Mounts or HostConfig, nor any exec it ran.
    assert key not in json.dumps(attrs)
    for exec_id in attrs.get("ExecIDs") or []:
        assert key not in json.dumps(engine.api.exec_inspect(exec_id))
    assert f"BOT_KEYS_FILE={CONTAINER_KEYS_FILE}" in attrs["Config"]["Env"]

    # Readable inside, as the bot's user, at the documented path only, from a private tmpfs.
    code, text = run_in(engine, bot.bot_id, "cat", CONTAINER_KEYS_FILE)
    assert (code, json.loads(text)) == (0, {"binance": key})
    code, mode = run_in(
        engine, bot.bot_id, "/bin/busybox", "stat", "-c", "%a %u", CONTAINER_KEYS_FILE
    )
    assert (code, mode.strip()) == (0, "400 65534")
    code, mounts = run_in(engine, bot.bot_id, "cat", "/proc/mounts")
    [mount] = [
        line.split() for line in mounts.splitlines() if line.split()[1] == CONTAINER_KEYS_DIR
    ]
    assert mount[2] == "tmpfs"
    assert {"noexec", "nosuid", "nodev", "mode=700", "uid=65534"} <= set(mount[3].split(","))
    tmpfs = attrs["HostConfig"]["Tmpfs"][CONTAINER_KEYS_DIR]
    assert "mode=0700" in tmpfs and "uid=65534" in tmpfs
    assert attrs["HostConfig"]["ReadonlyRootfs"] is True

    # Nothing on the engine's disk holds it: the container's layer and its config and log files.
    upper = Path(attrs["GraphDriver"]["Data"]["UpperDir"])
    container_dir = Path(attrs["HostnamePath"]).parent
    for root in (upper, container_dir):
        assert root.is_dir(), f"{root} is not reachable: is the engine on this host?"
        assert files_holding(root, key) == []
    assert host_processes_showing(key) == []


@pytest.mark.docker
def test_docker_a_new_key_reaches_the_bot_when_it_is_started_again(
    docker_runtime: DockerRuntime, engine: docker.DockerClient
) -> None:
    old, new, tenant_id = secret(), secret(), tenant()
    docker_runtime.start_bot(spec(tenant_id, {"binance": old}))
    bot = docker_runtime.start_bot(spec(tenant_id, {"binance": new, "bitso": old}))
    code, text = run_in(engine, bot.bot_id, "cat", CONTAINER_KEYS_FILE)
    assert (code, json.loads(text)) == (0, {"binance": new, "bitso": old})


def keys_reloaded(lines: list[str]) -> bool:
    return any(line.startswith("colmena-bot keys reloaded (") for line in lines)


@pytest.mark.docker
def test_docker_a_changed_key_reaches_the_running_bot_and_shows_nowhere_else(
    docker_runtime: DockerRuntime, engine: docker.DockerClient
) -> None:
    old, new, tenant_id = secret(), secret(), tenant()
    bot = docker_runtime.start_bot(spec(tenant_id, {"binance": old}))
    wait_for(lambda: keys_loaded(docker_runtime.logs(tenant_id)), what="the bot to load its keys")

    assert docker_runtime.replace_keys(tenant_id, {"binance": new, "bitso": old}) is True
    assert docker_runtime.replace_keys(tenant_id, {"binance": new, "bitso": old}) is True  # again

    # The same container, its file replaced whole, still 0400, nothing left beside it.
    code, text = run_in(engine, bot.bot_id, "cat", CONTAINER_KEYS_FILE)
    assert (code, json.loads(text)) == (0, {"binance": new, "bitso": old})
    code, mode = run_in(
        engine, bot.bot_id, "/bin/busybox", "stat", "-c", "%a %u", CONTAINER_KEYS_FILE
    )
    assert (code, mode.strip()) == (0, "400 65534")
    code, listing = run_in(engine, bot.bot_id, "/bin/busybox", "ls", "-a", CONTAINER_KEYS_DIR)
    assert (code, sorted(listing.split())) == (0, [".", "..", "keys.json"])
    wait_for(lambda: keys_reloaded(docker_runtime.logs(tenant_id)), what="the bot to re-read")
    assert bot_of(docker_runtime, tenant_id).bot_id == bot.bot_id  # not restarted

    attrs = engine.api.inspect_container(bot.bot_id)
    for key in (old, new):
        assert key not in json.dumps(attrs)
        for exec_id in attrs.get("ExecIDs") or []:
            assert key not in json.dumps(engine.api.exec_inspect(exec_id))
        assert files_holding(Path(attrs["GraphDriver"]["Data"]["UpperDir"]), key) == []
        assert files_holding(Path(attrs["HostnamePath"]).parent, key) == []
        assert host_processes_showing(key) == []
        assert not any(key in line for line in docker_runtime.logs(tenant_id, tail=1000))

    assert docker_runtime.replace_keys(tenant_id, {}) is True  # every key deleted
    code, text = run_in(engine, bot.bot_id, "cat", CONTAINER_KEYS_FILE)
    assert (code, json.loads(text)) == (0, {})


@pytest.mark.docker
def test_docker_keys_for_a_bot_that_does_not_run_wait_for_its_next_start(
    docker_runtime: DockerRuntime, engine: docker.DockerClient
) -> None:
    tenant_id = tenant()
    assert docker_runtime.replace_keys(tenant_id, {"binance": secret()}) is False  # no bot
    crashing = replace(spec(tenant_id, {"binance": secret()}), env={"BOT_CRASH_AFTER": "1"})
    docker_runtime.start_bot(crashing)
    wait_for(
        lambda: (bot := bot_of(docker_runtime, tenant_id)) and bot.state is BotState.EXITED,
        what="the bot to crash",
    )
    assert docker_runtime.replace_keys(tenant_id, {"binance": secret()}) is False


@pytest.fixture
def bad_images(engine: docker.DockerClient) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for image in made:
        engine.images.remove(image, force=True)


@pytest.mark.docker
@pytest.mark.parametrize(
    ("cmd", "applets", "said"),
    [
        ('["/bin/no-such-bot"]', ("sh", "sleep", "cat", "mv"), "no-such-bot"),
        ('["/bin/sleep", "60"]', ("sleep",), "keys not delivered"),
    ],
    ids=["entrypoint-cannot-exec", "image-cannot-take-keys"],
)
def test_docker_a_bot_that_cannot_start_raises_and_leaves_nothing(
    engine: docker.DockerClient,
    bad_images: list[str],
    cmd: str,
    applets: tuple[str, ...],
    said: str,
) -> None:
    image = image_from(engine, cmd, applets)
    bad_images.append(image)
    instance = f"test-{uuid.uuid4().hex[:8]}"
    runtime = DockerRuntime(engine, image=image, network_mode="none", instance=instance)
    tenant_id = tenant()
    with pytest.raises(BotStartFailed) as refused:
        runtime.start_bot(spec(tenant_id, {"binance": secret()}))
    assert said in str(refused.value)
    assert runtime.list_bots() == []


# Processes ------------------------------------------------------------------------------------


@pytest.fixture
def process_runtime(tmp_path: Path) -> Iterator[ProcessRuntime]:
    runtime = ProcessRuntime(BOT_SCRIPT, tmp_path / "bots")
    yield runtime
    runtime.close()


def mount_of(path: Path) -> tuple[str, str]:
    """(mount point, filesystem type) of the mount `path` lives on."""
    mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    best = max(
        (m for m in mounts if str(path).startswith(m[0].rstrip("/") + "/")), key=lambda m: len(m[0])
    )
    return best[0], best[1]


def test_process_keys_are_a_private_file_on_tmpfs_never_the_environment(
    process_runtime: ProcessRuntime,
) -> None:
    key, tenant_id = secret(), tenant()
    process_runtime.start_bot(spec(tenant_id, {"binance": key}))
    wait_for(lambda: keys_loaded(process_runtime.logs(tenant_id)), what="the bot to load its keys")
    pid = process_runtime.pid(tenant_id)
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    keys_file = process_runtime.keys_file(tenant_id)

    assert f"BOT_KEYS_FILE={keys_file}".encode() in environ
    assert host_processes_showing(key) == []
    assert json.loads(keys_file.read_text()) == {"binance": key}
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o400
    assert stat.S_IMODE(keys_file.parent.stat().st_mode) == 0o700
    assert keys_file.stat().st_uid == os.getuid()
    assert mount_of(keys_file)[1] == "tmpfs"
    assert not any(key in line for line in process_runtime.logs(tenant_id, tail=1000))

    process_runtime.stop_bot(tenant_id)
    assert not keys_file.exists() and not keys_file.parent.exists()


def test_process_keys_file_goes_when_the_bot_exits_and_a_restart_gets_the_new_key(
    process_runtime: ProcessRuntime,
) -> None:
    old, new, tenant_id = secret(), secret(), tenant()
    crashing = replace(spec(tenant_id, {"binance": old}), env={"BOT_CRASH_AFTER": "1"})
    process_runtime.start_bot(crashing)
    first = process_runtime.keys_file(tenant_id)
    wait_for(
        lambda: (bot := bot_of(process_runtime, tenant_id)) and bot.state is BotState.EXITED,
        what="the bot to crash",
    )
    wait_for(lambda: not first.parent.exists(), what="the keys file to go with the bot")

    process_runtime.start_bot(spec(tenant_id, {"binance": new}))
    again = process_runtime.keys_file(tenant_id)
    assert again != first and json.loads(again.read_text()) == {"binance": new}


def test_process_a_changed_key_replaces_the_running_bots_file_in_place(
    process_runtime: ProcessRuntime,
) -> None:
    old, new, tenant_id = secret(), secret(), tenant()
    process_runtime.start_bot(spec(tenant_id, {"binance": old}))
    wait_for(lambda: keys_loaded(process_runtime.logs(tenant_id)), what="the bot to load its keys")
    keys_file, pid = process_runtime.keys_file(tenant_id), process_runtime.pid(tenant_id)

    assert process_runtime.replace_keys(tenant_id, {"binance": new}) is True
    assert process_runtime.replace_keys(tenant_id, {"binance": new}) is True  # again: the same

    assert process_runtime.keys_file(tenant_id) == keys_file  # the path in BOT_KEYS_FILE holds
    assert json.loads(keys_file.read_text()) == {"binance": new}
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o400
    assert sorted(p.name for p in keys_file.parent.iterdir()) == ["keys.json"]
    wait_for(lambda: keys_reloaded(process_runtime.logs(tenant_id)), what="the bot to re-read")
    assert process_runtime.pid(tenant_id) == pid  # not restarted
    for key in (old, new):
        assert host_processes_showing(key) == []
        assert not any(key in line for line in process_runtime.logs(tenant_id, tail=1000))

    process_runtime.stop_bot(tenant_id)
    assert process_runtime.replace_keys(tenant_id, {"binance": secret()}) is False
    assert not keys_file.parent.exists()  # nothing written back once the bot is gone
