"""Backup and daily health report settings: where dumps go, the keys that seal them, how many
are kept, the optional S3-compatible copy, and when and to whom the health report is sent.

A backup is only as good as its key: COLMENA_BACKUP_KEYS lists base64 keys of 32 bytes, the
first seals new backups and every one of them opens old ones, so a key is rotated by putting
the new one first and dropping the old one once no kept backup needs it.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, SecretStr, field_validator

BACKUP_KEY_BYTES = 32


def decode_backup_keys(value: str) -> list[bytes]:
    """The raw keys of a COLMENA_BACKUP_KEYS value (comma-separated base64); ValueError names
    the position of a bad one, never its text."""
    parts = [part.strip() for part in value.split(",")]
    if not parts or not all(parts):
        raise ValueError("empty key in the list (two commas, or one at an end?)")
    keys = []
    for position, part in enumerate(parts, start=1):
        try:
            key = base64.b64decode(part, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"key {position} is not base64") from None
        if len(key) != BACKUP_KEY_BYTES:
            raise ValueError(
                f"key {position} is {len(key)} bytes, not {BACKUP_KEY_BYTES} "
                "(make one with: openssl rand -base64 32)"
            )
        keys.append(key)
    return keys


class BackupSettings(BaseModel):
    if TYPE_CHECKING:
        data_dir: Path  # declared by Settings (operator_time_zone by ReportsSettings)

    backup_dir: Path | None = Field(
        default=None,
        description="where encrypted backups are written; default <COLMENA_DATA_DIR>/backups",
    )
    backup_keys: SecretStr | None = Field(
        default=None,
        description="comma-separated base64 keys of 32 bytes (openssl rand -base64 32): the "
        "first encrypts, all decrypt (rotation)",
    )
    backup_keep_daily: int = Field(default=7, ge=1, le=366, description="newest of each day")
    backup_keep_weekly: int = Field(default=4, ge=0, le=520, description="newest of each week")
    backup_keep_monthly: int = Field(default=12, ge=0, le=1200, description="newest of each month")
    backup_local_hour: int = Field(
        default=3, ge=0, le=23, description="the daily backup's hour, in COLMENA_OPERATOR_TIME_ZONE"
    )
    backup_max_age_hours: float = Field(
        default=26.0,
        gt=0,
        description="colmena_backup_max_age_seconds: the last good backup older than this "
        "raises ColmenaBackupTooOld",
    )
    backup_pg_bin_dir: Path | None = Field(
        default=None,
        description="directory of pg_dump and pg_restore; default /usr/lib/postgresql/<server "
        "major>/bin when present, else PATH",
    )
    backup_s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint for a copy of each backup; unset: none"
    )
    backup_s3_bucket: str | None = None
    backup_s3_prefix: str = Field(default="colmena/", description="key prefix in the bucket")
    backup_s3_region: str = "us-east-1"
    backup_s3_access_key_id: SecretStr | None = None
    backup_s3_secret_access_key: SecretStr | None = None

    health_report_to: str | None = Field(
        default=None,
        pattern=r"^[^@\s]+@[^@\s]+$",
        description="the operator's address for the daily health report; unset: not sent",
    )
    health_report_local_hour: int = Field(
        default=7, ge=0, le=23, description="the report's hour, in COLMENA_OPERATOR_TIME_ZONE"
    )

    @field_validator(
        "backup_keys",
        "backup_s3_endpoint_url",
        "backup_s3_bucket",
        "backup_s3_access_key_id",
        "backup_s3_secret_access_key",
        "health_report_to",
        mode="before",
    )
    @classmethod
    def _blank_backup_setting_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value

    @field_validator("backup_keys")
    @classmethod
    def _check_backup_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_backup_keys(value.get_secret_value())
        return value

    def backup_directory(self) -> Path:
        return self.backup_dir or Path(self.data_dir, "backups")

    def backup_key_ring(self) -> list[bytes] | None:
        """The decoded keys, newest first; None when unset."""
        if self.backup_keys is None:
            return None
        return decode_backup_keys(self.backup_keys.get_secret_value())

    def backup_s3_configured(self) -> bool:
        return self.backup_s3_bucket is not None
