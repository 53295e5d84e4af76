"""The record of backups (table `backups`) and of the daily health reports (`health_reports`).

A backup row is inserted as the dump starts and finished with its outcome, so `colmena backups
list` shows failed and interrupted runs beside the good ones, and the backup metric and the
health report read the last good one from here, wherever the backup ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

_COLUMNS = (
    "id, started_at, finished_at, status, file_name, location, size_bytes, sha256, "
    "key_fingerprint, s3_key, error"
)


@dataclass(frozen=True)
class BackupRecord:
    id: int
    started_at: datetime
    finished_at: datetime | None
    status: str
    file_name: str
    location: str  # the file's path on the host that took it
    size_bytes: int | None
    sha256: str | None
    key_fingerprint: str | None
    s3_key: str | None
    error: str | None

    @property
    def path(self) -> str:
        return self.location


def _record(row: asyncpg.Record) -> BackupRecord:
    return BackupRecord(**dict(row))


async def start_backup(conn: asyncpg.Connection, *, file_name: str, location: str) -> int:
    return await conn.fetchval(
        "INSERT INTO backups (file_name, location) VALUES ($1, $2) RETURNING id",
        file_name,
        location,
    )


async def finish_backup(
    conn: asyncpg.Connection,
    backup_id: int,
    *,
    size_bytes: int,
    sha256: str,
    key_fingerprint: str,
    pg_dump_version: str,
    server_version: str,
) -> None:
    await conn.execute(
        """
        UPDATE backups SET status = 'ok', finished_at = now(), size_bytes = $2, sha256 = $3,
            key_fingerprint = $4, pg_dump_version = $5, server_version = $6
        WHERE id = $1
        """,
        backup_id,
        size_bytes,
        sha256,
        key_fingerprint,
        pg_dump_version,
        server_version,
    )


async def fail_backup(conn: asyncpg.Connection, backup_id: int, error: str) -> None:
    await conn.execute(
        "UPDATE backups SET status = 'failed', finished_at = now(), error = $2 WHERE id = $1",
        backup_id,
        error,
    )


async def note_uploaded(conn: asyncpg.Connection, backup_id: int, s3_key: str) -> None:
    await conn.execute("UPDATE backups SET s3_key = $2 WHERE id = $1", backup_id, s3_key)


async def mark_pruned(conn: asyncpg.Connection, backup_id: int) -> None:
    await conn.execute(
        "UPDATE backups SET status = 'pruned', pruned_at = now() WHERE id = $1 AND status = 'ok'",
        backup_id,
    )


async def backup_by_id(conn: asyncpg.Connection, backup_id: int) -> BackupRecord:
    return _record(await conn.fetchrow(f"SELECT {_COLUMNS} FROM backups WHERE id = $1", backup_id))


async def last_good_backup(conn: asyncpg.Connection) -> BackupRecord | None:
    """The newest backup that finished well, or None (none yet, or not migrated yet)."""
    if not await conn.fetchval("SELECT to_regclass('backups') IS NOT NULL"):
        return None
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM backups WHERE status = 'ok' ORDER BY finished_at DESC LIMIT 1"
    )
    return None if row is None else _record(row)


async def good_backups(conn: asyncpg.Connection) -> list[BackupRecord]:
    """Every backup still kept, newest first: what retention chooses from."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM backups WHERE status = 'ok' ORDER BY finished_at DESC, id DESC"
    )
    return [_record(row) for row in rows]


async def recent_backups(conn: asyncpg.Connection, limit: int = 50) -> list[BackupRecord]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM backups ORDER BY started_at DESC, id DESC LIMIT $1", limit
    )
    return [_record(row) for row in rows]


# Health reports --------------------------------------------------------------------------------


async def report_sent(conn: asyncpg.Connection, day: date) -> bool:
    return bool(
        await conn.fetchval("SELECT sent_at IS NOT NULL FROM health_reports WHERE day = $1", day)
    )


async def claim_report(conn: asyncpg.Connection, day: date, recipient: str) -> bool:
    """Lock the day's report row (created if new) for sending; False when it was sent already.
    Call inside a transaction held until `mark_report_sent`."""
    await conn.execute(
        "INSERT INTO health_reports (day, recipient) VALUES ($1, $2) ON CONFLICT (day) DO NOTHING",
        day,
        recipient,
    )
    sent = await conn.fetchval(
        "SELECT sent_at IS NOT NULL FROM health_reports WHERE day = $1 FOR UPDATE", day
    )
    return not sent


async def mark_report_sent(
    conn: asyncpg.Connection, day: date, *, recipient: str, message_id: str
) -> None:
    await conn.execute(
        "UPDATE health_reports SET sent_at = now(), recipient = $2, message_id = $3 WHERE day = $1",
        day,
        recipient,
        message_id,
    )


# The database itself ---------------------------------------------------------------------------


async def server_version(conn: asyncpg.Connection) -> tuple[int, str]:
    """(major, full version text) of the server: pg_dump must be of that major or newer."""
    number = int(await conn.fetchval("SELECT current_setting('server_version_num')"))
    text = await conn.fetchval("SELECT current_setting('server_version')")
    return number // 10000, str(text).split()[0]


async def user_relations(conn: asyncpg.Connection) -> list[str]:
    """Tables, views, sequences... outside PostgreSQL's own schemas (up to 5, for the message):
    a database to restore into must have none."""
    rows = await conn.fetch(
        """
        SELECT n.nspname || '.' || c.relname AS name FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
          AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
        ORDER BY 1 LIMIT 5
        """
    )
    return [row["name"] for row in rows]
