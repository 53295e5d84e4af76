"""Every process refuses a port already in use with one line naming the setting, and exit 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from colmena.config import Settings
from tests.ops_support import colmena_env


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "colmena", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("command", "setting"),
    [
        (["ingress"], "COLMENA_HTTP_PORT"),
        (["worker", "--queues", "payments", "--processes", "1"], "COLMENA_METRICS_PORT"),
        (["scheduler"], "COLMENA_SCHEDULER_METRICS_PORT"),
        (["dev"], "COLMENA_HTTP_PORT"),
    ],
)
def test_a_busy_port_is_one_line_and_exit_2(
    command: list[str], setting: str, held_port: int, settings: Settings, tmp_path: Path
) -> None:
    env = colmena_env(settings, **{setting: str(held_port)})
    if command == ["dev"]:
        env.pop("COLMENA_BROKER_URL")

    result = run(command, env, tmp_path)

    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        f"colmena: port {held_port} on 127.0.0.1 is in use ({setting}): "
        "stop what holds it or set another"
    ), result.stderr
    assert "Traceback" not in result.stderr
