"""Backups: colmena's encrypted, streamed backup and its checked restore, against plain pg_dump
and pg_restore of the same database with the same binaries, in the same run.

A scratch database gets `--payments` payments the console bench's way (bench/console_seed.py:
three provider events each, licenses and their emails, invoices, rates) and `--audit-rows`
audit rows, sealed as the `audit-seal` job would have (bench/audit.py's rows), so the restore's
chain check has a real chain to walk. Then, each of `--rounds` rounds, the order flipped every
round so that neither side always runs on a warmer cache:

- backup: `pg_dump --format=custom --file` (the baseline; its default compression is the
  level colmena asks for, and it flushes its file to disk as colmena does) against
  `take_backup` (pg_dump's stdout sealed with AES-256-GCM as it streams, fsynced, renamed,
  recorded, retention applied);
- restore: plain `pg_restore --dbname` of the plain dump into an empty database against
  `restore_backup` of colmena's file into another (the whole file checked first, pg_restore in
  one transaction, then the audit chain check and the reconciliation). `restore_backup` does
  not time its parts, so they are timed apart on the restored database right after it: the
  file check, the chain check, the reconciliation; the rest is its pg_restore, whose baseline
  is plain pg_restore given the same flags (`--single-transaction` and all), into a third
  empty database: what the decryption streamed into its stdin costs.

Each figure is the median of its rounds. MiB/s is the database's size (pg_database_size) over
the seconds. Peak RSS is this process's high-water mark (getrusage) after the first colmena
backup and after the first restore, against what it held resident just before the first
backup: the dump streams through this process, so that is what sealing in chunks keeps small.

    python bench/backups.py [--payments 200000] [--audit-rows N] [--rounds 3]

Every database and file it makes is dropped at the end, whatever happens (an error, Ctrl-C,
SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import asyncpg
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.audit import build as build_audit_rows  # noqa: E402
from bench.common import (  # noqa: E402
    ADMIN_URL,
    exit_on_sigterm,
    figure,
    machine,
    median,
    scratch_database,
)
from bench.console_seed import seed  # noqa: E402
from colmena.actors.backups import pg_tools, restore_backup, take_backup  # noqa: E402
from colmena.config import Settings  # noqa: E402
from colmena.config.logging import configure_logging  # noqa: E402
from colmena.gateways.backups import PgTools, libpq_target, verify_file  # noqa: E402
from colmena.store.audit import seal, verify_chain  # noqa: E402
from colmena.store.pool import connect  # noqa: E402
from colmena.store.reconciliation import find_disagreements  # noqa: E402

T = TypeVar("T")
MIB = 2**20
KEY = os.urandom(32)
# The restore's reconciliation covers every payment the backup holds, as restore_backup's does.
ALL_TIME = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass
class Seconds:
    """Seconds of each step, one entry per round."""

    plain_dump: list[float] = field(default_factory=list)
    colmena_backup: list[float] = field(default_factory=list)
    plain_restore: list[float] = field(default_factory=list)
    flagged_restore: list[float] = field(default_factory=list)
    colmena_restore: list[float] = field(default_factory=list)
    file_check: list[float] = field(default_factory=list)
    chain_check: list[float] = field(default_factory=list)
    reconciliation: list[float] = field(default_factory=list)

    def colmena_pg_restore(self) -> list[float]:
        """restore_backup's seconds less its checks: what its pg_restore took."""
        checks = zip(self.file_check, self.chain_check, self.reconciliation, strict=True)
        return [
            total - sum(parts) for total, parts in zip(self.colmena_restore, checks, strict=True)
        ]


def peak_rss_mib() -> float:
    """This process's high-water resident set (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """This process's resident set now: a baseline the seeding's own peak cannot hide behind."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


async def timed(step: Awaitable[T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = await step
    return time.perf_counter() - started, result


@asynccontextmanager
async def empty_database() -> AsyncIterator[str]:
    """A database with nothing in it (restore refuses any other), dropped afterwards."""
    name = f"colmena_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{ADMIN_URL.rpartition('/')[0]}/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def settings_for(url: str, work: Path) -> Settings:
    # _env_file: pydantic-settings' own argument (no .env of the checkout); mypy sees fields only.
    return Settings(  # type: ignore[call-arg]
        database_url=SecretStr(url),
        data_dir=work / "data",
        env="dev",
        log_level="WARNING",
        backup_keys=SecretStr(base64.b64encode(KEY).decode()),
        backup_dir=work / "backups",
        _env_file=None,
    )


def run_tool(arguments: list[str], url: str) -> None:
    """A pg_dump/pg_restore run as an operator would type it; RuntimeError with its stderr."""
    _, env = libpq_target(url)
    result = subprocess.run(
        arguments, capture_output=True, text=True, env={**os.environ, **env}, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{arguments[0]} exit {result.returncode}: {result.stderr[-400:]}")


def plain_dump(tools: PgTools, url: str, path: Path) -> None:
    target, _ = libpq_target(url)
    path.unlink(missing_ok=True)
    run_tool([str(tools.pg_dump), "--format=custom", f"--file={path}", f"--dbname={target}"], url)


# The flags restore_backup gives pg_restore: one transaction (one commit, not one per object).
COLMENA_FLAGS = ("--exit-on-error", "--single-transaction", "--no-owner", "--no-privileges")


def plain_restore(tools: PgTools, path: Path, url: str, flags: tuple[str, ...] = ()) -> None:
    target, _ = libpq_target(url)
    run_tool([str(tools.pg_restore), *flags, f"--dbname={target}", str(path)], url)


async def load(url: str, payments: int, audit_rows: int) -> int:
    """Seed the source database; its size in bytes."""
    conn = await connect(url)
    try:
        started = time.perf_counter()
        counts = await seed(conn, payments)
        if audit_rows:
            await build_audit_rows(conn, audit_rows)
            await seal(conn)
        await conn.execute("VACUUM ANALYZE")
        print(
            f"seeded in {time.perf_counter() - started:.1f} s: "
            f"{', '.join(f'{table} {count}' for table, count in counts.items())}, "
            f"audit_events {audit_rows} (sealed)",
            flush=True,
        )
        return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()


class Bench:
    """The rounds on one seeded database, into files under `work`."""

    def __init__(self, source_url: str, work: Path, tools: PgTools, settings: Settings) -> None:
        self.source_url, self.tools, self.settings = source_url, tools, settings
        self.plain_file = work / "plain.pgdump"
        self.seconds = Seconds()
        self.colmena_file: Path | None = None
        self.rss: dict[str, float] = {}
        self.checked = ""

    async def plain_backup(self) -> None:
        spent, _ = await timed(
            asyncio.to_thread(plain_dump, self.tools, self.source_url, self.plain_file)
        )
        self.seconds.plain_dump.append(spent)

    async def colmena_backup(self) -> None:
        conn = await connect(self.source_url)
        try:
            spent, outcome = await timed(
                take_backup(self.settings, conn, database_url=self.source_url)
            )
        finally:
            await conn.close()
        self.seconds.colmena_backup.append(spent)
        self.rss.setdefault("after backup", peak_rss_mib())
        if self.colmena_file is not None:
            self.colmena_file.unlink(missing_ok=True)  # retention prunes it too: one day, newest
        self.colmena_file = Path(outcome.record.location)

    async def plain_load(self) -> None:
        async with empty_database() as url:
            spent, _ = await timed(
                asyncio.to_thread(plain_restore, self.tools, self.plain_file, url)
            )
        self.seconds.plain_restore.append(spent)
        async with empty_database() as url:
            spent, _ = await timed(
                asyncio.to_thread(plain_restore, self.tools, self.plain_file, url, COLMENA_FLAGS)
            )
        self.seconds.flagged_restore.append(spent)

    async def colmena_restore(self) -> None:
        assert self.colmena_file is not None
        async with empty_database() as url:
            spent, report = await timed(restore_backup(self.settings, self.colmena_file, url))
            self.rss.setdefault("after restore", peak_rss_mib())
            self.seconds.colmena_restore.append(spent)
            # restore_backup's parts, each again on what it just restored.
            keys = self.settings.backup_key_ring() or []
            spent, _ = await timed(asyncio.to_thread(verify_file, self.colmena_file, keys))
            self.seconds.file_check.append(spent)
            conn = await connect(url)
            try:
                spent, _ = await timed(verify_chain(conn))
                self.seconds.chain_check.append(spent)
                spent, _ = await timed(
                    find_disagreements(conn, ALL_TIME, datetime.now(UTC) + timedelta(days=1))
                )
                self.seconds.reconciliation.append(spent)
            finally:
                await conn.close()
        self.checked = (
            f"audit chain {'ok' if report.audit.ok else 'BROKEN'} ({report.audit.checked} rows),"
            f" {len(report.disagreements)} disagreements"
        )

    async def round(self, index: int) -> None:
        backups = [self.plain_backup, self.colmena_backup]
        restores = [self.plain_load, self.colmena_restore]
        if index % 2 == 0:
            backups.reverse()
            restores.reverse()
        for step in (*backups, *restores):
            await step()
        s = self.seconds
        print(
            f"round {index}: pg_dump {s.plain_dump[-1]:.1f} s, take_backup "
            f"{s.colmena_backup[-1]:.1f} s; pg_restore {s.plain_restore[-1]:.1f} s (with "
            f"restore_backup's flags {s.flagged_restore[-1]:.1f} s), "
            f"restore_backup {s.colmena_restore[-1]:.1f} s ({self.checked})",
            flush=True,
        )


def report(bench: Bench, database_bytes: int, rss_before: float, payments: int) -> None:
    s = bench.seconds
    assert bench.colmena_file is not None
    database = database_bytes / MIB
    figure(f"database size ({payments} payments)", database, "MiB")
    figure(
        "colmena backup file size",
        bench.colmena_file.stat().st_size / MIB,
        "MiB",
        baseline=bench.plain_file.stat().st_size / MIB,
        baseline_name="plain pg_dump file",
    )
    pairs = (
        ("backup, colmena take_backup", s.colmena_backup, s.plain_dump, "plain pg_dump"),
        ("restore, colmena restore_backup", s.colmena_restore, s.plain_restore, "plain pg_restore"),
    )
    for name, colmena, plain, plain_name in pairs:
        figure(
            f"{name}, median",
            median(colmena),
            "s",
            baseline=median(plain),
            baseline_name=plain_name,
        )
        figure(
            f"{name}, throughput",
            database / median(colmena),
            "MiB/s",
            baseline=database / median(plain),
            baseline_name=plain_name,
        )
    figure(
        "restore_backup: its file check (decrypt, discard), median",
        median(s.file_check) * 1000,
        "ms",
    )
    for name, values in (
        ("audit chain check", s.chain_check),
        ("reconciliation", s.reconciliation),
    ):
        figure(f"restore_backup: its {name}, median", median(values), "s")
    figure(
        "restore_backup: its pg_restore (the rest), median",
        median(s.colmena_pg_restore()),
        "s",
        baseline=median(s.flagged_restore),
        baseline_name="plain pg_restore with its flags",
    )
    for stage, value in bench.rss.items():
        figure(
            f"peak RSS of this process {stage}",
            value,
            "MiB",
            baseline=rss_before,
            baseline_name="resident before the first backup",
        )
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"largest pg_dump/pg_restore child: peak RSS {children:.0f} MiB")


async def run(work: Path, payments: int, audit_rows: int, rounds: int) -> None:
    print(f"machine: {machine()}")
    async with scratch_database() as source_url:
        database_bytes = await load(source_url, payments, audit_rows)
        settings = settings_for(source_url, work)
        conn = await connect(source_url)
        try:
            tools, server = await pg_tools(settings, conn)
        finally:
            await conn.close()
        print(f"server {server}, {tools.pg_dump} {tools.version}", flush=True)
        bench = Bench(source_url, work, tools, settings)
        rss_before = rss_mib()
        for index in range(1, rounds + 1):
            await bench.round(index)
        report(bench, database_bytes, rss_before, payments)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--payments", type=int, default=200_000)
    parser.add_argument(
        "--audit-rows", type=int, default=None, help="sealed audit rows (default: --payments)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    exit_on_sigterm()
    configure_logging(dev=True, level="WARNING")  # the figures are the output
    audit_rows = args.payments if args.audit_rows is None else args.audit_rows
    # Outside the event loop: removed only once the loop has let its threads (a pg_dump
    # being read) finish, whatever ended the run.
    with tempfile.TemporaryDirectory(prefix="colmena-bench-backups-") as work:
        asyncio.run(run(Path(work), args.payments, audit_rows, args.rounds))


if __name__ == "__main__":
    main()
