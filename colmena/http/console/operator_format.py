"""How the operator pages write times, money and dead letters' bytes (ages: `domain.durations`).

Times are stored in UTC and shown in the operators' zone (COLMENA_OPERATOR_TIME_ZONE) with their
offset, so a time read off a page is never ambiguous. `operator_common.show` hands them to
every operator template.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from decimal import Decimal

from colmena.domain.money import format_minor, format_money


def when(value: datetime | None, zone: tzinfo) -> str:
    """A stored time in the operators' zone, to the second, with its UTC offset."""
    if value is None:
        return "—"
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %z")


def money_minor(minor: int, currency: str) -> str:
    return format_minor(minor, currency)


def money(amount: Decimal | None, currency: str | None) -> str:
    if amount is None or not currency:
        return "—"
    return format_money(amount, currency)
