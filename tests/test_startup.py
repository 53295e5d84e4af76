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


def test_a_worker_refuses_to_serve_a_queue_it_cannot_work(
    settings: Settings, tmp_path: Path
) -> None:
    result = run(["worker", "--queues", "stamping"], colmena_env(settings), tmp_path)

    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "colmena: stamping needs COLMENA_CFDI_CSD_CER_PATH to stamp CFDI invoices (and "
        )
    ), result.stderr


def test_check_shows_readiness_and_never_a_secret(settings: Settings, tmp_path: Path) -> None:
    secret = "sk-very-secret-0123456789"
    env = colmena_env(
        settings,
        COLMENA_MERCADOPAGO_WEBHOOK_SECRET=secret,
        COLMENA_SMTP_HOST="127.0.0.1",
        COLMENA_SMTP_PASSWORD=secret,
        COLMENA_SMTP_USERNAME="mailer",
    )

    result = run(["check"], env, tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert secret not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("MISSING  payments") and "COLMENA_MERCADOPAGO_ACCESS_TOKEN" in line
        for line in lines
    )
    assert any(
        line.startswith("ok       licenses") and "COLMENA_SMTP_HOST" in line for line in lines
    )
    assert any(line.startswith("ok       database") for line in lines)
    assert any(
        line.startswith("MISSING  ingress") and "COLMENA_REDIS_URL" in line for line in lines
    )
