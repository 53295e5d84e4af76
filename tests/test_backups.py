"""Backups that restore, on the real PostgreSQL with the real pg_dump and pg_restore: a populated
database backed up and restored into a fresh one holds every table equal; a full or read-only
target fails loudly and leaves the old backups; a non-empty target is refused; retention prunes
only after a good backup; the job takes one backup a day; the gauge reads the last good one."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import asyncpg
import pytest
from moto.server import ThreadedMotoServer
from prometheus_client.utils import floatToGoString
from pydantic import SecretStr

from colmena.actors import all_jobs
from colmena.actors.backups import backup_due, daily_backup, restore_backup, take_backup
from colmena.config import Settings
from colmena.config.metrics import BACKUP_FAILURES
from colmena.gateways.backup_crypto import BackupCryptoError, fingerprint
from colmena.gateways.backup_s3 import target_for
from colmena.gateways.backups import BackupError, libpq_target
from colmena.store import backups as store
from colmena.store.audit import verify_chain
from colmena.store.reconciliation import find_disagreements
from tests.backups_support import (
    KEY,
    backup_settings,
    colmena,
    fill,
    make_read_only,
    operator_env,
    small_filesystem,
    table_digests,
)
from tests.bots_support import resources_for
from tests.console_data import seed_console
from tests.ops_support import ingress_metrics
from tests.standins.smtp import free_port

ALL_TIME = datetime(2000, 1, 1, tzinfo=UTC)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def failures(stage: str) -> float:
    return BACKUP_FAILURES.labels(stage=stage)._value.get()


def leftovers(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.startswith("."))


async def backup(settings: Settings, db: asyncpg.Connection, **kwargs: object):
    return await take_backup(settings, db, database_url=settings.require_database_url(), **kwargs)


async def test_a_populated_database_restores_into_a_fresh_one_with_every_table_equal(
    settings: Settings, db: asyncpg.Connection, database_url: str, empty_database_url: str, tmp_path
) -> None:
    await seed_console(db, settings)
    # One invoice billing a peso more than its payment: the restored copy must show it too.
    wrong = await db.fetchval(
        "UPDATE invoices SET total = total + 1 WHERE id = (SELECT min(id) FROM invoices) "
        "RETURNING payment_id"
    )
    # Checking the chain seals what is unsealed; done here, the restore's check adds nothing.
    assert (await verify_chain(db)).ok
    config = backup_settings(settings, tmp_path / "backups")
    outcome = await backup(config, db)
    path = Path(outcome.record.location)
    assert path.parent == tmp_path / "backups" and path.exists()
    assert outcome.record.key_fingerprint == fingerprint(KEY)
    assert outcome.record.sha256 == sha256(path)
    assert outcome.record.size_bytes == path.stat().st_size
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"PGDMP" not in path.read_bytes()  # sealed: no custom-format magic in clear
    assert leftovers(path.parent) == []
    assert (await store.last_good_backup(db)) == outcome.record

    source = await table_digests(database_url)
    report = await restore_backup(config, path, empty_database_url)
    restored = await table_digests(empty_database_url)
    # This backup's own row was committed as 'running' before pg_dump's snapshot, and finished
    # after it: that row alone differs.
    source.pop("public.backups")
    assert restored.pop("public.backups")[0] == 1
    into = await asyncpg.connect(empty_database_url)
    try:
        assert await into.fetchval("SELECT status FROM backups") == "running"
    finally:
        await into.close()
    assert source == restored
    assert sum(rows for rows, _ in source.values()) > 50
    assert {"public.payments", "public.licenses", "public.invoices", "public.tenants"} <= set(
        restored
    )
    assert report.audit.ok, report.audit
    found = await find_disagreements(db, ALL_TIME, datetime.now(UTC) + timedelta(days=1))
    assert report.disagreements == found
    assert ("invoice_amount_differs", wrong) in {(d.kind, d.payment_id) for d in found}
    assert not report.clean


async def test_a_restore_into_a_database_that_holds_anything_is_refused(
    settings: Settings, db: asyncpg.Connection, database_url: str, tmp_path
) -> None:
    config = backup_settings(settings, tmp_path / "backups")
    outcome = await backup(config, db)
    before = await table_digests(database_url)
    with pytest.raises(BackupError, match="target database is not empty"):
        await restore_backup(config, Path(outcome.record.location), database_url)
    assert await table_digests(database_url) == before


async def test_restore_through_the_cli_prints_both_checks_and_exits_1_on_findings(
    settings: Settings, db: asyncpg.Connection, empty_database_url: str, tmp_path
) -> None:
    await seed_console(db, settings)
    wrong = await db.fetchval(
        "UPDATE invoices SET total = total + 1 WHERE id = (SELECT min(id) FROM invoices) "
        "RETURNING payment_id"
    )
    config = backup_settings(settings, tmp_path / "backups")
    env = operator_env(config)
    made = await colmena(env, "backup")
    assert made.returncode == 0, made.stderr
    path = Path(made.stdout.split()[1])
    restored = await colmena(env, "restore", str(path), "--into", empty_database_url)
    assert restored.returncode == 1, restored.stderr
    assert restored.stdout.startswith(f"restored {path} (")
    assert "audit chain: ok (" in restored.stdout
    assert re.search(r"^reconciliation: [1-9]\d* disagreement\(s\)$", restored.stdout, re.M)
    assert f"  payment {wrong}: invoice_amount_differs: " in restored.stdout
    again = await colmena(env, "restore", str(path), "--into", empty_database_url)
    assert again.returncode == 2
    [line] = again.stderr.strip().splitlines()
    assert line.startswith("colmena: the target database is not empty (public.")
    assert line.endswith("...): restore only into a new, empty database (createdb)")


async def test_a_damaged_backup_is_refused_before_the_database_is_touched(
    settings: Settings, db: asyncpg.Connection, empty_database_url: str, tmp_path
) -> None:
    config = backup_settings(settings, tmp_path / "backups")
    path = Path((await backup(config, db)).record.location)
    cut = tmp_path / "cut.pgdump.cbk"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(BackupCryptoError, match="truncated"):
        await restore_backup(config, cut, empty_database_url)
    assert await table_digests(empty_database_url) == {}


async def test_a_full_target_fails_loudly_and_the_old_backups_stay(
    settings: Settings, db: asyncpg.Connection, tmp_path
) -> None:
    with small_filesystem(tmp_path, "4m") as point:
        # daily=1: a second good backup would prune the first; a failed one must not.
        config = backup_settings(
            settings, point, backup_keep_daily=1, backup_keep_weekly=0, backup_keep_monthly=0
        )
        first = await backup(config, db)
        old = Path(first.record.location)
        digest = sha256(old)
        fill(point)
        before = failures("dump")
        result = await colmena(operator_env(config), "backup")
        assert result.returncode == 2, result.stdout
        message = result.stderr.strip().splitlines()[-1]
        assert message == f"colmena: backup directory {point} is full (No space left on device)"
        assert sha256(old) == digest
        assert sorted(os.listdir(point)) == sorted([old.name, "filler"])
        rows = await store.recent_backups(db)
        assert [row.status for row in rows] == ["failed", "ok"]
        assert "is full" in (rows[0].error or "")
        assert (await store.last_good_backup(db)) == first.record

        with pytest.raises(BackupError, match="is full"):
            await backup(config, db)
        assert failures("dump") == before + 1
        assert sorted(os.listdir(point)) == sorted([old.name, "filler"])


async def test_a_read_only_target_fails_loudly_and_the_old_backups_stay(
    settings: Settings, db: asyncpg.Connection, tmp_path
) -> None:
    with small_filesystem(tmp_path, "16m") as point:
        config = backup_settings(
            settings, point, backup_keep_daily=1, backup_keep_weekly=0, backup_keep_monthly=0
        )
        old = Path((await backup(config, db)).record.location)
        digest = sha256(old)
        make_read_only(point)
        result = await colmena(operator_env(config), "backup")
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1] == (
            f"colmena: cannot write to backup directory {point} (Read-only file system)"
        )
        assert os.listdir(point) == [old.name] and sha256(old) == digest


async def test_a_target_that_is_a_file_fails_loudly(
    settings: Settings, db: asyncpg.Connection, tmp_path
) -> None:
    not_a_directory = tmp_path / "backups"
    not_a_directory.write_text("a file, not a directory")
    config = backup_settings(settings, not_a_directory)
    with pytest.raises(BackupError, match=f"cannot write to backup directory {not_a_directory}"):
        await backup(config, db)
    assert not_a_directory.read_text() == "a file, not a directory"


def fake_pg_tools(directory: Path, version: str) -> Path:
    directory.mkdir()
    for name in ("pg_dump", "pg_restore"):
        tool = directory / name
        tool.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) {version}'\n")
        tool.chmod(0o755)
    return directory


async def test_pg_dump_older_than_the_server_is_one_line_and_exit_2(
    settings: Settings, db: asyncpg.Connection, tmp_path
) -> None:
    old = fake_pg_tools(tmp_path / "old-bin", "9.6.24")
    config = backup_settings(settings, tmp_path / "backups")
    result = await colmena(operator_env(config, COLMENA_BACKUP_PG_BIN_DIR=str(old)), "backup")
    assert result.returncode == 2
    major = int(await db.fetchval("SHOW server_version_num")) // 10000
    assert result.stderr.strip().splitlines() == [
        f"colmena: {old}/pg_dump is version 9.6.24, older than the server (major {major}): "
        f"install postgresql-client-{major} or set COLMENA_BACKUP_PG_BIN_DIR"
    ]
    missing = await colmena(
        operator_env(config, COLMENA_BACKUP_PG_BIN_DIR=str(tmp_path / "nowhere")), "backup"
    )
    assert missing.returncode == 2
    assert "pg_dump and pg_restore not found" in missing.stderr
    assert not (tmp_path / "backups").exists() or os.listdir(tmp_path / "backups") == []


async def test_no_key_is_one_line_and_exit_2(settings: Settings, tmp_path) -> None:
    env = operator_env(backup_settings(settings, tmp_path / "backups"), COLMENA_BACKUP_KEYS="")
    result = await colmena(env, "backup")
    assert result.returncode == 2
    assert "COLMENA_BACKUP_KEYS is not set" in result.stderr


async def test_retention_prunes_after_a_good_backup_only(
    settings: Settings, db: asyncpg.Connection, tmp_path
) -> None:
    config = backup_settings(
        settings,
        tmp_path / "backups",
        backup_keep_daily=2,
        backup_keep_weekly=0,
        backup_keep_monthly=0,
    )
    # Three backups finished on three days (the record's time set back, as days would pass).
    made = []
    for days_ago in (2, 1):
        outcome = await backup(config, db)
        await db.execute(
            "UPDATE backups SET finished_at = now() - make_interval(days => $2) WHERE id = $1",
            outcome.record.id,
            days_ago,
        )
        made.append(outcome)
    third = await backup(config, db)
    assert [record.id for record in third.pruned] == [made[0].record.id]
    assert not Path(made[0].record.location).exists()
    assert Path(made[1].record.location).exists() and Path(third.record.location).exists()
    statuses = {row.id: row.status for row in await store.recent_backups(db)}
    assert statuses == {made[0].record.id: "pruned", made[1].record.id: "ok", third.record.id: "ok"}

    listed = await colmena(operator_env(config), "backups", "list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[2] for line in listed.stdout.splitlines()[1:]] == ["ok", "ok", "pruned"]
    pruned = await colmena(operator_env(config), "backups", "prune")
    assert pruned.stdout.strip().splitlines()[-1] == "0 backup(s) pruned"


async def test_the_job_takes_one_backup_a_day_after_the_local_hour(
    settings: Settings, db: asyncpg.Connection, tmp_path
) -> None:
    assert "backup" in {job.name for job in all_jobs()}
    config = backup_settings(settings, tmp_path / "backups")
    resources = resources_for(config)
    await resources.start()
    try:
        await daily_backup(resources)
        await daily_backup(resources)
    finally:
        await resources.close()
    rows = await store.recent_backups(db)
    assert [row.status for row in rows] == ["ok"]
    last = rows[0]
    hour = config.backup_local_hour
    zone = config.operator_zone()
    assert last.finished_at is not None
    # The first local `hour` after the backup: today's when the backup ran before it (between
    # local midnight and the hour), else tomorrow's.
    finished = last.finished_at.astimezone(zone)
    next_slot = datetime.combine(finished.date(), time(hour), zone)
    if next_slot <= finished:
        next_slot += timedelta(days=1)
    assert not backup_due(last, config, next_slot - timedelta(minutes=1))
    assert backup_due(last, config, next_slot + timedelta(minutes=1))
    assert backup_due(None, config, datetime.now(UTC))


async def test_the_gauge_reads_the_last_good_backup_from_the_database(
    settings: Settings, db: asyncpg.Connection, make_client, tmp_path
) -> None:
    client = await make_client()
    text = await ingress_metrics(client)
    assert "colmena_backup_last_success_timestamp_seconds 0.0" in text
    assert f"colmena_backup_max_age_seconds {settings.backup_max_age_hours * 3600}" in text
    outcome = await backup(backup_settings(settings, tmp_path / "backups"), db)
    assert outcome.record.finished_at is not None
    text = await ingress_metrics(client)
    value = floatToGoString(outcome.record.finished_at.timestamp())
    assert f"colmena_backup_last_success_timestamp_seconds {value}" in text


def test_the_password_never_reaches_the_command_line() -> None:
    assert libpq_target(
        "postgresql://colmena:s%40cret@db1:5432,db2:5432/colmena?sslmode=require"
    ) == (
        "postgresql://colmena@db1:5432,db2:5432/colmena?sslmode=require",
        {"PGPASSWORD": "s@cret"},
    )
    assert libpq_target("postgresql://postgres@127.0.0.1/test") == (
        "postgresql://postgres@127.0.0.1/test",
        {},
    )


async def test_a_missing_backup_file_is_one_line(
    settings: Settings, empty_database_url: str, tmp_path
) -> None:
    config = backup_settings(settings, tmp_path / "backups")
    missing = tmp_path / "none.pgdump.cbk"
    result = await colmena(
        operator_env(config), "restore", str(missing), "--into", empty_database_url
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"colmena: cannot read {missing} (No such file or directory)"
    ]


@pytest.fixture
def s3_server() -> Iterator[str]:
    """moto's S3 on 127.0.0.1: the endpoint URL of an S3-compatible service of this test's own."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def s3_settings(settings: Settings, directory: Path, endpoint: str, **more: object) -> Settings:
    """Settings for a bucket of this test's own (moto keeps every bucket for the process)."""
    return backup_settings(
        settings,
        directory,
        backup_s3_endpoint_url=endpoint,
        backup_s3_bucket=f"colmena-{uuid.uuid4().hex[:12]}",
        backup_s3_access_key_id=SecretStr("test-access"),
        backup_s3_secret_access_key=SecretStr("test-secret"),
        **more,
    )


async def test_each_backup_is_copied_to_the_bucket_and_pruned_there_too(
    settings: Settings, db: asyncpg.Connection, s3_server: str, tmp_path
) -> None:
    config = s3_settings(
        settings,
        tmp_path / "backups",
        s3_server,
        backup_keep_daily=1,
        backup_keep_weekly=0,
        backup_keep_monthly=0,
    )
    target = target_for(config)
    target.client.create_bucket(Bucket=target.bucket)
    first = await backup(config, db)
    assert first.uploaded == f"colmena/{first.record.file_name}"
    copy = tmp_path / "downloaded"
    await asyncio.to_thread(target.download, first.uploaded, copy)
    assert sha256(copy) == first.record.sha256
    await db.execute(
        "UPDATE backups SET finished_at = now() - interval '1 day' WHERE id = $1", first.record.id
    )
    second = await backup(config, db)
    assert [record.id for record in second.pruned] == [first.record.id]
    assert await asyncio.to_thread(target.keys) == [f"colmena/{second.record.file_name}"]
    assert (await store.last_good_backup(db)).s3_key == second.uploaded  # type: ignore[union-attr]


async def test_a_bucket_that_refuses_fails_loudly_and_keeps_the_local_backup(
    settings: Settings, db: asyncpg.Connection, s3_server: str, tmp_path
) -> None:
    config = s3_settings(settings, tmp_path / "backups", s3_server)  # the bucket does not exist
    before = failures("upload")
    result = await colmena(
        operator_env(
            config,
            COLMENA_BACKUP_S3_ENDPOINT_URL=s3_server,
            COLMENA_BACKUP_S3_BUCKET=str(config.backup_s3_bucket),
            COLMENA_BACKUP_S3_ACCESS_KEY_ID="test-access",
            COLMENA_BACKUP_S3_SECRET_ACCESS_KEY="test-secret",
        ),
        "backup",
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("colmena: backup written to ")
    assert line.endswith(
        f"but its S3 copy failed: bucket {config.backup_s3_bucket}: NoSuchBucket: "
        "The specified bucket does not exist"
    )
    assert "test-secret" not in result.stderr
    [record] = await store.recent_backups(db)
    assert record.status == "ok" and record.s3_key is None and Path(record.location).exists()
    with pytest.raises(BackupError, match="S3 copy failed"):
        await backup(config, db)
    assert failures("upload") == before + 1


async def test_the_job_without_keys_takes_nothing_and_records_nothing(
    settings: Settings, db: asyncpg.Connection, tmp_path
) -> None:
    resources = resources_for(settings.model_copy(update={"backup_dir": tmp_path / "backups"}))
    await resources.start()
    try:
        await daily_backup(resources)
    finally:
        await resources.close()
    assert await store.recent_backups(db) == []
    assert not (tmp_path / "backups").exists()
