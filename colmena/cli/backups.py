"""`colmena backup`, `colmena restore FILE --into URL`, `colmena backups list|prune`.

A backup that cannot be made (keys unset, pg_dump too old for the server, the directory full
or unwritable) prints one line and exits 2, and older backups stay as they were. A restore
that finds the audit chain broken or the payments disagreeing with their licenses and invoices
prints what it found and exits 1: the data is restored, but not as trustworthy as it should be.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from colmena.actors.backups import (
    BackupOutcome,
    RestoreReport,
    prune_backups,
    restore_backup,
    take_backup,
)
from colmena.config import Settings
from colmena.config.dev_stack import load_operator_settings
from colmena.config.logging import configure_logging
from colmena.errors import ColmenaError
from colmena.runtime.startup import open_database
from colmena.store import backups as store
from colmena.store.backups import BackupRecord
from colmena.store.migrate import SchemaNotMigrated, ensure_migrated

EXIT_FAILED = 2
EXIT_FINDINGS = 1
T = TypeVar("T")


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run the command; a failure an operator can act on is one line and exit 2."""
    configure_logging(dev=True, level="WARNING")  # the command's own lines are the output
    try:
        return asyncio.run(work)
    except (ColmenaError, SchemaNotMigrated) as exc:
        click.echo(f"colmena: {exc}", err=True)
        sys.exit(EXIT_FAILED)


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


async def _backup(settings: Settings) -> BackupOutcome:
    url = settings.require_database_url()
    conn = await open_database(url)
    try:
        await ensure_migrated(conn)
        return await take_backup(settings, conn, database_url=url)
    finally:
        await conn.close()


@click.command("backup")
def backup_command() -> None:
    """Dump the database now (pg_dump, encrypted) into COLMENA_BACKUP_DIR, then prune."""
    outcome = _run(_backup(load_operator_settings()))
    click.echo(f"backup {outcome.record.location} ({_size(outcome.record.size_bytes)})")
    click.echo(f"key {outcome.record.key_fingerprint}")
    if outcome.uploaded:
        click.echo(f"copied to {outcome.uploaded}")
    for record in outcome.pruned:
        click.echo(f"pruned {record.file_name}")


def _print_report(report: RestoreReport) -> None:
    audit = report.audit
    if audit.ok:
        click.echo(f"audit chain: ok ({audit.checked} rows checked)")
    else:
        click.echo(f"audit chain: BROKEN ({len(audit.breaks)} finding(s), {audit.checked} checked)")
        for finding in audit.breaks:
            click.echo(f"  event {finding.event_id}: {finding.kind}: {finding.detail}")
    if not report.disagreements:
        click.echo("reconciliation: no disagreements")
    else:
        click.echo(f"reconciliation: {len(report.disagreements)} disagreement(s)")
        for item in report.disagreements:
            click.echo(f"  payment {item.payment_id}: {item.kind}: {item.detail}")


@click.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--into",
    "into_url",
    required=True,
    help="URL of an EMPTY database to restore into (postgresql://user@host/db)",
)
@click.option(
    "--keep-owners",
    is_flag=True,
    help="restore owners and grants too (the target server must have the same roles)",
)
def restore_command(file: Path, into_url: str, keep_owners: bool) -> None:
    """Restore a backup into an empty database, then check its audit chain and reconciliation.

    Exits 1 when either check finds something, 2 when the restore itself fails.
    """
    settings = load_operator_settings()
    report = _run(restore_backup(settings, file, into_url, keep_owners=keep_owners))
    click.echo(f"restored {file} ({_size(report.bytes_restored)} of dump)")
    _print_report(report)
    if not report.clean:
        sys.exit(EXIT_FINDINGS)


@click.group("backups")
def backups_group() -> None:
    """Backups taken: list them, prune by retention."""


async def _with_database(settings: Settings) -> list[BackupRecord]:
    conn = await open_database(settings.require_database_url())
    try:
        await ensure_migrated(conn)
        return await store.recent_backups(conn)
    finally:
        await conn.close()


@backups_group.command("list")
def list_command() -> None:
    """The most recent backups (good, failed, pruned), newest first."""
    records = _run(_with_database(load_operator_settings()))
    if not records:
        click.echo("no backups yet (colmena backup)")
        return
    click.echo(f"{'started (UTC)':<20} {'status':<8} {'size':>10}  file")
    for record in records:
        started = record.started_at.strftime("%Y-%m-%d %H:%M:%S")
        detail = f"  ({record.error})" if record.error else ""
        click.echo(
            f"{started:<20} {record.status:<8} {_size(record.size_bytes):>10}  "
            f"{record.file_name}{detail}"
        )


async def _prune(settings: Settings) -> list[BackupRecord]:
    conn = await open_database(settings.require_database_url())
    try:
        await ensure_migrated(conn)
        return await prune_backups(settings, conn)
    finally:
        await conn.close()


@backups_group.command("prune")
def prune_command() -> None:
    """Delete what COLMENA_BACKUP_KEEP_DAILY/WEEKLY/MONTHLY no longer keep (`backup` does this
    after every good backup)."""
    pruned = _run(_prune(load_operator_settings()))
    for record in pruned:
        click.echo(f"pruned {record.file_name}")
    click.echo(f"{len(pruned)} backup(s) pruned")


COMMANDS = [backup_command, restore_command, backups_group]
