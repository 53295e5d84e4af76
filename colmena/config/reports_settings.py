"""Settings for operators' reports and the reconciliation report: the time zone their dates are
read and shown in, and the longest range one report may cover."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator


class ReportsSettings(BaseModel):
    operator_time_zone: str = Field(
        default="America/Mexico_City",
        description=(
            "IANA time zone of the operators: report days (--from/--to) start at its midnight "
            "and report timestamps are shown in it, with their offset"
        ),
    )
    report_max_days: int = Field(
        default=366,
        ge=1,
        le=3660,
        description="the longest range one report or reconciliation may cover, in days",
    )
    report_fetch_rows: int = Field(
        default=500,
        ge=10,
        le=10_000,
        description="rows a report fetches from its server-side cursor at a time (its memory)",
    )
    reconcile_grace_minutes: int = Field(
        default=15,
        ge=0,
        le=1440,
        description=(
            "a payment whose status changed this recently is not yet expected to have its "
            "license, invoice or cancellation (its follow-ups may still be queued)"
        ),
    )

    @field_validator("operator_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. America/Mexico_City)") from None
        return value

    def operator_zone(self) -> ZoneInfo:
        return ZoneInfo(self.operator_time_zone)

    def reconcile_grace(self) -> timedelta:
        return timedelta(minutes=self.reconcile_grace_minutes)
