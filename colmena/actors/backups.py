"""Backups: take one (the daily `backup` job and `colmena backup`), prune by retention, and
restore one into an empty database and check it.

- `take_backup`: pg_dump, sealed with the first COLMENA_BACKUP_KEYS key, into the backup
  directory (`colmena.gateways.backups` says how a failure leaves nothing behind), recorded in
  `backups`, copied to the S3-compatible bucket when one is set, then pruned. A failure is
  recorded, counted (colmena_backup_failures_total) and raised; nothing is pruned after one.
- job `backup`: every ten minutes, takes the day's backup once the local hour
  COLMENA_BACKUP_LOCAL_HOUR has passed and no good backup is newer than it, so a scheduler that
  was down at that hour catches up when it returns.
- `restore_backup`: refuses a database that has any table, checks the whole file opens, restores
  it in one transaction, then runs the audit chain check and the reconciliation on it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import structlog
from apscheduler.triggers.interval import IntervalTrigger

from colmena.config import Settings
from colmena.config.metrics import BACKUP_FAILURES, BACKUP_LAST_SUCCESS
from colmena.domain.backup_retention import Candidate, Retention, decide, latest_slot
from colmena.domain.reconciliation import Disagreement
from colmena.gateways import backup_s3
from colmena.gateways.backups import (
    BackupError,
    DumpResult,
    PgTools,
    backup_name,
    dump_database,
    find_pg_tools,
    remove_backup,
    restore_database,
    verify_file,
)
from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import scheduled
from colmena.store import backups as store
from colmena.store.audit import AuditVerdict, verify_chain
from colmena.store.pool import connect
from colmena.store.reconciliation import find_disagreements

log = structlog.get_logger(__name__)

# Reconciliation after a restore covers every payment the backup holds.
_ALL_TIME = datetime(2000, 1, 1, tzinfo=UTC)


def _keys(settings: Settings) -> list[bytes]:
    keys = settings.backup_key_ring()
    if keys is None:
        raise BackupError(
            "COLMENA_BACKUP_KEYS is not set (a base64 key of 32 bytes: openssl rand -base64 32)"
        )
    return keys


async def pg_tools(settings: Settings, conn: asyncpg.Connection) -> tuple[PgTools, str]:
    """The pg_dump/pg_restore for this server, and the server's version."""
    major, version = await store.server_version(conn)
    tools = await asyncio.to_thread(find_pg_tools, settings.backup_pg_bin_dir, major)
    return tools, version


@dataclass(frozen=True)
class BackupOutcome:
    record: store.BackupRecord
    pruned: list[store.BackupRecord]
    uploaded: str | None


async def take_backup(
    settings: Settings, conn: asyncpg.Connection, *, database_url: str, now: datetime | None = None
) -> BackupOutcome:
    """Dump, record, copy, prune; BackupError (one line) when the backup could not be made,
    in which case nothing older was touched."""
    key = _keys(settings)[0]
    tools, server = await pg_tools(settings, conn)
    directory = settings.backup_directory()
    name = backup_name(now or datetime.now(UTC))
    backup_id = await store.start_backup(conn, file_name=name, location=str(directory / name))
    try:
        result: DumpResult = await asyncio.to_thread(
            dump_database, tools, database_url, directory, name, key
        )
    except Exception as exc:
        BACKUP_FAILURES.labels(stage="dump").inc()
        await store.fail_backup(conn, backup_id, str(exc) or type(exc).__name__)
        raise
    await store.finish_backup(
        conn,
        backup_id,
        size_bytes=result.size_bytes,
        sha256=result.sha256,
        key_fingerprint=result.sealed.key_fingerprint,
        pg_dump_version=tools.version,
        server_version=server,
    )
    record = await store.backup_by_id(conn, backup_id)
    BACKUP_LAST_SUCCESS.set(record.finished_at.timestamp() if record.finished_at else 0)
    log.info(
        "backup taken",
        file=str(result.path),
        size_bytes=result.size_bytes,
        key=record.key_fingerprint,
    )
    uploaded = await _upload(settings, conn, record, result.path)
    pruned = await prune_backups(settings, conn, now=now)
    return BackupOutcome(record=record, pruned=pruned, uploaded=uploaded)


async def _upload(
    settings: Settings, conn: asyncpg.Connection, record: store.BackupRecord, path: Path
) -> str | None:
    if not settings.backup_s3_configured():
        return None
    target = backup_s3.target_for(settings)
    try:
        object_key = await asyncio.to_thread(target.upload, path)
    except backup_s3.BackupUploadError as exc:
        BACKUP_FAILURES.labels(stage="upload").inc()
        raise BackupError(f"backup written to {path}, but its S3 copy failed: {exc}") from None
    await store.note_uploaded(conn, record.id, object_key)
    return object_key


async def prune_backups(
    settings: Settings, conn: asyncpg.Connection, *, now: datetime | None = None
) -> list[store.BackupRecord]:
    """Delete the backups retention no longer keeps (files, S3 copies, then their rows)."""
    records = {str(record.id): record for record in await store.good_backups(conn)}
    decision = decide(
        [
            Candidate(ident, record.finished_at)
            for ident, record in records.items()
            if record.finished_at is not None
        ],
        Retention(
            daily=settings.backup_keep_daily,
            weekly=settings.backup_keep_weekly,
            monthly=settings.backup_keep_monthly,
        ),
        now=now or datetime.now(UTC),
        zone=settings.operator_zone(),
    )
    pruned = []
    target = backup_s3.target_for(settings) if settings.backup_s3_configured() else None
    for candidate in decision.delete:
        record = records[candidate.ident]
        if target is not None and record.s3_key is not None:
            try:
                await asyncio.to_thread(target.delete, record.s3_key)
            except backup_s3.BackupUploadError as exc:
                log.error("backup kept: its S3 copy could not be deleted", error=str(exc))
                continue
        await asyncio.to_thread(remove_backup, Path(record.location))
        await store.mark_pruned(conn, record.id)
        pruned.append(record)
        log.info("backup pruned", file=record.file_name)
    return pruned


def backup_due(last: store.BackupRecord | None, settings: Settings, now: datetime) -> bool:
    """Whether the day's backup is still to take: none finished since the last local hour."""
    if last is None or last.finished_at is None:
        return True
    return last.finished_at < latest_slot(now, settings.backup_local_hour, settings.operator_zone())


@scheduled("backup", IntervalTrigger(minutes=10))
async def daily_backup(resources: Resources) -> None:
    """Take the day's backup when it is due (COLMENA_BACKUP_LOCAL_HOUR) and keys are set."""
    settings = resources.settings
    async with resources.pool.acquire() as conn:
        if not backup_due(await store.last_good_backup(conn), settings, datetime.now(UTC)):
            return
        if settings.backup_keys is None:
            if settings.env != "dev":  # `colmena dev` needs no backups; production does
                log.warning("no backup taken: COLMENA_BACKUP_KEYS is not set")
            return
        try:
            await take_backup(settings, conn, database_url=resources.database_url)
        except BackupError as exc:
            # Recorded and counted; the next tick tries again.
            log.error("backup failed; older backups untouched, nothing pruned", error=str(exc))


# Restore ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreReport:
    bytes_restored: int
    audit: AuditVerdict
    disagreements: list[Disagreement]

    @property
    def clean(self) -> bool:
        return self.audit.ok and not self.disagreements


async def restore_backup(
    settings: Settings, path: Path, into_url: str, *, keep_owners: bool = False
) -> RestoreReport:
    """Restore `path` into the empty database `into_url`, then check what it holds."""
    keys = _keys(settings)
    conn = await connect(into_url)
    try:
        found = await store.user_relations(conn)
        if found:
            raise BackupError(
                f"the target database is not empty ({', '.join(found)} ...): restore only into "
                "a new, empty database (createdb)"
            )
        tools, _ = await pg_tools(settings, conn)
        size = await asyncio.to_thread(verify_file, path, keys)
        await asyncio.to_thread(
            restore_database, tools, path, keys, into_url, keep_owners=keep_owners
        )
        log.info("backup restored", file=str(path), into=_database_name(into_url))
        verdict = await verify_chain(conn)
        disagreements = await find_disagreements(
            conn, _ALL_TIME, datetime.now(UTC) + timedelta(days=1)
        )
    finally:
        await conn.close()
    return RestoreReport(bytes_restored=size, audit=verdict, disagreements=disagreements)


def _database_name(url: str) -> str:
    return url.rpartition("/")[2].partition("?")[0]
