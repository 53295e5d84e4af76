"""Operator-facing failures: one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from colmena.config import SettingsError, load_settings


def run_colmena(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("COLMENA_")}
    return subprocess.run(
        [sys.executable, "-m", "colmena", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", [["migrate"], ["ingress"], ["scheduler"]])
def test_bad_database_url_is_one_line_and_exit_2(command: list[str], tmp_path) -> None:
    result = run_colmena(
        *command, env={"COLMENA_DATABASE_URL": "mysql://nope", "COLMENA_DATA_DIR": str(tmp_path)}
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "COLMENA_DATABASE_URL" in lines[0]
    assert "Traceback" not in result.stderr


def test_unreachable_database_is_one_line_and_exit_2(tmp_path) -> None:
    result = run_colmena(
        "migrate", env={"COLMENA_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        "colmena: cannot reach the database (COLMENA_DATABASE_URL)"
    )


def test_unmigrated_database_tells_to_migrate(empty_database_url: str) -> None:
    result = run_colmena(
        "ingress",
        env={
            "COLMENA_DATABASE_URL": empty_database_url,
            "COLMENA_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/",
        },
    )
    assert result.returncode == 2
    assert "run `colmena migrate`" in result.stderr


def test_secret_settings_never_print() -> None:
    settings = load_settings(database_url="postgresql://user:hunter2@db/x", _env_file=None)
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())


def test_invalid_port_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="COLMENA_HTTP_PORT"):
        load_settings(http_port=70000, _env_file=None)
