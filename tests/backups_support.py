"""Shared set-up for the backup tests: settings with a key, every table's digest, the `colmena`
command as an operator runs it, and small filesystems that really are full or read-only."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from colmena.config import Settings
from tests.conftest import in_ci

KEY = bytes(range(32))
KEY_B64 = base64.b64encode(KEY).decode()


def backup_settings(settings: Settings, directory: Path, **overrides: object) -> Settings:
    return settings.model_copy(
        update={"backup_keys": SecretStr(KEY_B64), "backup_dir": directory, **overrides}
    )


async def table_digests(url: str) -> dict[str, tuple[int, str | None]]:
    """(rows, md5 of every row in order) of every table outside PostgreSQL's own schemas."""
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            """
            SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) AS name
            FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
            ORDER BY 1
            """
        )
        found = {}
        for table in tables:
            name = table["name"]
            row = await conn.fetchrow(
                f"SELECT count(*) AS n, md5(string_agg(t::text, ',' ORDER BY t::text)) AS digest "
                f"FROM {name} t"
            )
            found[name] = (row["n"], row["digest"])
        return found
    finally:
        await conn.close()


def operator_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("COLMENA_")}
    env.update(
        {
            "COLMENA_DATABASE_URL": settings.require_database_url(),
            "COLMENA_DATA_DIR": str(settings.data_dir),
            "COLMENA_BACKUP_KEYS": KEY_B64,
            "COLMENA_LOG_LEVEL": "WARNING",
            **extra,
        }
    )
    if settings.backup_dir is not None:
        env.setdefault("COLMENA_BACKUP_DIR", str(settings.backup_dir))
    return env


async def colmena(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "colmena", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _mount_refused(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason}, and CI=true: this test must run in CI, not skip", pytrace=False)
    pytest.skip(f"{reason} (with CI=true this fails instead)")


@contextlib.contextmanager
def small_filesystem(parent: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted under `parent`, unmounted afterwards. It needs root (mount
    rights); a full tmpfs refuses writes with ENOSPC even to root, and a read-only one with
    EROFS, which chmod cannot promise (root ignores modes)."""
    point = parent / f"fs-{uuid.uuid4().hex[:8]}"
    point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        _mount_refused(f"cannot mount a tmpfs ({result.stderr.strip() or 'not root'})")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)
        point.rmdir()


def make_read_only(point: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)


def fill(point: Path) -> None:
    """Write a filler file until the filesystem says it is full."""
    with (point / "filler").open("wb", buffering=0) as filler:
        block = b"\0" * 65536
        with contextlib.suppress(OSError):
            while True:
                filler.write(block)
