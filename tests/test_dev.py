"""`colmena dev` from an empty directory, with no database or broker configured."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from bench.common import free_port
from tests.conftest import wait_for


def start_dev(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("COLMENA_")}
    env["COLMENA_HTTP_PORT"] = str(port)
    return subprocess.Popen(
        [sys.executable, "-m", "colmena", "dev"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def ready(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def stop(process: subprocess.Popen[bytes]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = await asyncio.to_thread(process.communicate, timeout=30)
    return output.decode(errors="replace")


async def test_dev_starts_from_nothing_and_restarts_with_its_data(tmp_path: Path) -> None:
    port = free_port()
    process = start_dev(tmp_path, port)
    try:
        await wait_for(lambda: ready(port), timeout=30, interval=0.25)
    finally:
        output = await stop(process)
    assert process.returncode == 0, output
    assert f"http://127.0.0.1:{port}/metrics" in output
    assert (tmp_path / ".colmena" / "pgdata" / "PG_VERSION").exists()

    process = start_dev(tmp_path, port)
    try:
        await wait_for(lambda: ready(port), timeout=30, interval=0.25)
    finally:
        output = await stop(process)
    assert process.returncode == 0, output
    assert "migrations applied" not in output
