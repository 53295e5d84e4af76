"""CFDI stamping settings: the PAC, the issuer's CSD and fiscal data, and what goes on an invoice.

The PAC defaults to SW Sapien's TEST environment. Nothing here is needed to start `colmena dev`:
a payment that asks for an invoice while the CSD or issuer fields are unset is dead-lettered
with a message naming the missing variable. Invoice emails go out through the licenses' SMTP
settings (COLMENA_SMTP_*). Stamped XML and rendered PDF live in PostgreSQL; files are an optional
export (COLMENA_CFDI_STORAGE_DIR). An optional second PAC (COLMENA_PAC_FAILOVER_*, the same
environment and timeout) stamps while the first is down; `colmena.actors.invoice_stamping` says
when an invoice may move to it.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Self

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator


class StampingSettings(BaseModel):
    if TYPE_CHECKING:
        data_dir: Path  # declared by Settings
        env: str

    pac_provider: Literal["sw", "finkok", "diverza", "prodigia"] = Field(
        default="sw", description="which PAC stamps the invoices"
    )
    pac_environment: Literal["TEST", "PRODUCTION"] = "TEST"
    pac_base_url: str | None = Field(
        default=None, description="override of the PAC's stamping host"
    )
    pac_api_url: str | None = Field(
        default=None, description="override of SW's api host (recovery by UUID)"
    )
    pac_token: SecretStr | None = Field(default=None, description="SW or Diverza token")
    pac_user: str | None = None
    pac_password: SecretStr | None = None
    pac_contract: str | None = Field(default=None, description="Prodigia contract")
    pac_client_id: str | None = Field(default=None, description="Diverza client id")
    pac_timeout_seconds: float = Field(
        default=30.0, gt=0, le=120, description="per HTTP call to the PAC"
    )
    pac_failover_provider: Literal["sw", "finkok", "diverza", "prodigia"] | None = Field(
        default=None,
        description="a second PAC that stamps while the first is down (5xx, no connection), "
        "for invoices the first cannot have stamped; unset: none",
    )
    pac_failover_base_url: str | None = None
    pac_failover_api_url: str | None = None
    pac_failover_token: SecretStr | None = None
    pac_failover_user: str | None = None
    pac_failover_password: SecretStr | None = None
    pac_failover_contract: str | None = None
    pac_failover_client_id: str | None = None

    cfdi_csd_cer_path: Path | None = Field(
        default=None, description="the issuer's CSD certificate (.cer, DER)"
    )
    cfdi_csd_key_path: Path | None = Field(
        default=None, description="the CSD's private key (.key, encrypted DER)"
    )
    cfdi_csd_password: SecretStr | None = None
    cfdi_csd_warn_days: int = Field(default=30, ge=1, le=365)
    cfdi_issuer_rfc: str | None = None
    cfdi_issuer_name: str | None = Field(
        default=None, description="as registered with the SAT, without regime"
    )
    cfdi_issuer_regime: str | None = Field(default=None, pattern=r"^\d{3}$")
    cfdi_issuer_postal_code: str | None = Field(default=None, pattern=r"^\d{5}$")
    cfdi_series: str = Field(default="A", pattern=r"^[^|]{1,25}$")
    cfdi_iva_rate: Decimal | None = Field(
        default=Decimal("0.16"),
        ge=0,
        le=1,
        description="IVA traslado rate; `none` = not subject to tax",
    )
    cfdi_product_key: str = Field(
        default="81112100", pattern=r"^\d{8}$", description="ClaveProdServ"
    )
    cfdi_unit_key: str = Field(default="E48", pattern=r"^[A-Z0-9]{2,3}$", description="ClaveUnidad")
    cfdi_payment_form: str = Field(
        default="04", pattern=r"^\d{2}$", description="FormaPago when the payment metadata has none"
    )
    cfdi_full_refund: Literal["cancel", "credit_note"] = Field(
        default="cancel",
        description="what a refund of the whole amount does to its invoice: cancel it at the SAT "
        "(motive 02), or issue a credit note (CFDI de Egreso); after a partial refund's credit "
        "note it is always a credit note",
    )
    cfdi_credit_note_series: str = Field(
        default="NC", pattern=r"^[^|]{1,25}$", description="Serie of credit notes (Egresos)"
    )
    cfdi_global_period: Literal["daily", "monthly", "off"] = Field(
        default="daily",
        description="how often sales without an RFC are gathered into the CFDI global for "
        "público en general (stamped within 24 hours of the period's close, RMF 2.7.1.21); "
        "off: never",
    )
    cfdi_storage_dir: Path | None = Field(
        default=None,
        description="where each worker also writes copies of the stamped XML and PDF for the "
        "accountant (the database holds both; nothing reads the files back); unset: none, "
        "except under <COLMENA_DATA_DIR>/invoices in `colmena dev`",
    )
    pdf_processes: int = Field(
        default=2,
        ge=1,
        le=16,
        description="render processes per worker process, started on its first invoice PDF",
    )

    @model_validator(mode="after")
    def _failover_is_another_pac(self) -> Self:
        # An invoice is pinned to a PAC by provider name, so the two must differ.
        if self.pac_failover_provider == self.pac_provider:
            raise ValueError(
                f"COLMENA_PAC_FAILOVER_PROVIDER is {self.pac_failover_provider}, the same PAC as "
                "COLMENA_PAC_PROVIDER: name a different one, or unset it"
            )
        return self

    @field_validator("cfdi_iva_rate", mode="before")
    @classmethod
    def _none_means_untaxed(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return None
        return value

    @field_validator("cfdi_issuer_rfc")
    @classmethod
    def _upper_rfc(cls, value: str | None) -> str | None:
        return value.strip().upper() if value else value

    @property
    def cfdi_storage_path(self) -> Path | None:
        """Where invoice copies are exported, if anywhere: `colmena dev` keeps them in its data
        directory so the story shows them with nothing configured."""
        if self.cfdi_storage_dir is not None or self.env != "dev":
            return self.cfdi_storage_dir
        return Path(self.data_dir, "invoices")
