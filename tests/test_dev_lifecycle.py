"""Ctrl-C always stops `colmena dev`, and its embedded PostgreSQL stops with it, on every path."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.test_dev import free_port, ready, start_dev


def postgres_of(data_dir: Path) -> list[int]:
    """Pids of PostgreSQL servers running on `data_dir`'s embedded cluster."""
    pgdata = str((data_dir / ".colmena" / "pgdata").resolve())
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if any(arg.decode(errors="replace") == pgdata for arg in argv) and b"postgres" in argv[0]:
            found.append(int(proc.name))
    return found


async def _no_postgres(data_dir: Path) -> bool:
    return not postgres_of(data_dir)


async def _pgdata_ready(data_dir: Path) -> bool:
    return (data_dir / ".colmena" / "pgdata" / "postmaster.pid").exists()


@pytest.mark.parametrize("when", ["serving", "starting"])
async def test_ctrl_c_stops_dev_and_its_database(tmp_path: Path, when: str) -> None:
    port = free_port()
    process = start_dev(tmp_path, port)
    try:
        if when == "serving":
            await wait_for(lambda: ready(port), timeout=60, interval=0.25)
        else:
            await wait_for(lambda: _pgdata_ready(tmp_path), timeout=60, interval=0.05)
        process.send_signal(signal.SIGINT)
        output, _ = await asyncio.to_thread(process.communicate, timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    text = output.decode(errors="replace")
    assert process.returncode == (0 if when == "serving" else 130), text
    assert "Traceback" not in text, text
    await wait_for(lambda: _no_postgres(tmp_path), timeout=15, interval=0.1)
