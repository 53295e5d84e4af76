"""The optional copy of each backup in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2...).

The file uploaded is the sealed one: the bucket never sees a readable dump or the key. boto3
streams it in parts (multipart above its threshold), so a dump larger than memory uploads as it
is. Every failure becomes one `BackupUploadError` whose message names the bucket and the
provider's error code, never the credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from colmena.config import Settings
from colmena.errors import TransientError


class BackupUploadError(TransientError):
    """The bucket did not take (or give back, or delete) an object."""


def _reason(exc: BaseException) -> str:
    """The provider's error code and message; boto3's transfer errors wrap the ClientError."""
    inner = exc.__cause__ or exc.__context__
    if isinstance(exc, Boto3Error) and isinstance(inner, ClientError):
        exc = inner
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip(": ")
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")


class S3Target:
    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"S3Target(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def key_for(self, path: Path) -> str:
        return f"{self.prefix}{path.name}"

    def upload(self, path: Path) -> str:
        """Upload the file; returns its object key."""
        key = self.key_for(path)
        try:
            self.client.upload_file(str(path), self.bucket, key)
        except (Boto3Error, BotoCoreError, ClientError, OSError) as exc:
            raise BackupUploadError(f"bucket {self.bucket}: {_reason(exc)}") from None
        return key

    def download(self, key: str, path: Path) -> None:
        try:
            self.client.download_file(self.bucket, key, str(path))
        except (Boto3Error, BotoCoreError, ClientError, OSError) as exc:
            raise BackupUploadError(f"bucket {self.bucket}, {key}: {_reason(exc)}") from None

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (Boto3Error, BotoCoreError, ClientError) as exc:
            raise BackupUploadError(f"bucket {self.bucket}, {key}: {_reason(exc)}") from None

    def keys(self) -> list[str]:
        """Every object key under the prefix (for `colmena backups list` and tests)."""
        found: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                found.extend(item["Key"] for item in page.get("Contents", []))
        except (Boto3Error, BotoCoreError, ClientError) as exc:
            raise BackupUploadError(f"bucket {self.bucket}: {_reason(exc)}") from None
        return found


def target_for(settings: Settings) -> S3Target:
    """The bucket of COLMENA_BACKUP_S3_*; keys unset mean boto3's own chain (environment,
    instance role)."""
    if settings.backup_s3_bucket is None:
        raise ValueError("COLMENA_BACKUP_S3_BUCKET is not set")
    access = settings.backup_s3_access_key_id
    secret = settings.backup_s3_secret_access_key
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=settings.backup_s3_endpoint_url,
        region_name=settings.backup_s3_region,
        aws_access_key_id=access.get_secret_value() if access else None,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10),
    )
    return S3Target(client, settings.backup_s3_bucket, settings.backup_s3_prefix)
