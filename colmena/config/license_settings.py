"""License delivery settings: signing key, product directory and archive cache, links, SMTP.

Directories left unset live under COLMENA_DATA_DIR, so `colmena dev` works with nothing
configured. No directory is shared between hosts: workers and ingresses each read the same
read-only product directory (deployment data) and keep their own archive cache. The ingress
needs the public key (COLMENA_LICENSE_PUBLIC_KEY) to serve it, to check keys and to rebuild a
package's license members; the private key belongs to the workers that issue licenses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator


class LicenseSettings(BaseModel):
    if TYPE_CHECKING:
        data_dir: Path  # declared by Settings
        http_host: str
        http_port: int

    license_signing_key: SecretStr | None = Field(
        default=None,
        description="Ed25519 private key (PKCS8 PEM); unset in `colmena dev` means a key "
        "generated once under COLMENA_DATA_DIR",
    )
    license_public_key: str | None = Field(
        default=None, description="Ed25519 public key PEM; unset means derived from the signing key"
    )
    license_products_dir: Path | None = Field(
        default=None,
        description="one subdirectory per product_ref, read-only, the same on every host "
        "(modification times and modes included); default <COLMENA_DATA_DIR>/products",
    )
    license_archive_dir: Path | None = Field(
        default=None,
        description="this host's cache of compressed product archives, rebuilt from the "
        "products directory when absent; never shared; default "
        "<COLMENA_DATA_DIR>/product-archives",
    )
    license_link_ttl_hours: float = Field(default=72.0, gt=0, le=24 * 90)
    license_max_downloads: int = Field(default=1, ge=1, le=100)
    license_retention_hours: float = Field(
        default=168.0,
        ge=0,
        description="how long dead links are kept before cleanup",
    )
    license_base_url: str | None = Field(
        default=None,
        description="public base URL the emailed download links start with; "
        "unset: this ingress's host and port",
    )
    license_download_token_per_minute: int = Field(default=10, ge=1)

    smtp_host: str | None = Field(
        default=None, description="unset in `colmena dev` means emails are written as .eml files"
    )
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_starttls: bool = True
    smtp_username: str | None = None
    smtp_password: SecretStr | None = Field(default=None, validate_default=True)
    smtp_sender: str = Field(default="licenses@localhost", pattern=r"^[^@\s]+@[^@\s]+$")
    smtp_timeout_s: float = Field(default=30.0, gt=0, le=120)
    license_send_lease_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="how long a worker's claim on a license email lasts; an email whose worker "
        "died mid-send is sent again by a retry after this (keep it above a whole SMTP "
        "conversation: several COLMENA_SMTP_TIMEOUT_S)",
    )

    @field_validator(
        "license_signing_key", "license_public_key", "smtp_host", "smtp_username", mode="before"
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """An empty variable (``COLMENA_SMTP_HOST=``) means unset, as it does for an operator."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("license_base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
        ):
            raise ValueError("expected an http(s) URL such as https://shop.example.com")
        return value.rstrip("/")

    @field_validator("smtp_password")
    @classmethod
    def _credentials_together(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        if (info.data.get("smtp_username") is None) != (value is None):
            raise ValueError("COLMENA_SMTP_USERNAME and COLMENA_SMTP_PASSWORD go together")
        return value

    @property
    def license_links_base(self) -> str:
        """Where emailed links point: the configured public URL, else this ingress itself."""
        return self.license_base_url or f"http://{self.http_host}:{self.http_port}"

    @property
    def license_products_path(self) -> Path:
        return self.license_products_dir or Path(self.data_dir, "products")

    @property
    def license_archive_path(self) -> Path:
        return self.license_archive_dir or Path(self.data_dir, "product-archives")
