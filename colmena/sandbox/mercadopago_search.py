"""`GET /v1/payments/search` of the Mercado Pago sandbox: filters, date ranges, pages.

As the API reference has it: `sort` (date_created, date_approved, date_last_updated, id,
money_release_date) and `criteria` (asc, desc); a `range` of one of those dates between
`begin_date` and `end_date`, each ISO-8601 with an offset, `NOW` or `NOW-30DAYS`; exact
`status`, `external_reference` and `id`; `offset`/`limit` (up to 1000). Bad values get the
reference's codes (1001 dates, 1003 sort, 1004 criteria).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from colmena.sandbox.mercadopago_payments import SandboxPayment, bad_request

SORTS = ("date_created", "date_approved", "date_last_updated", "id", "money_release_date")
RANGES = ("date_created", "date_approved", "date_last_updated", "money_release_date")
MAX_LIMIT = 1000
_RELATIVE = re.compile(r"^NOW(?:-(\d{1,4})(DAYS|HOURS|MINUTES))?$")


def parse_date(value: str, now: datetime) -> datetime:
    """`begin_date` / `end_date`: ISO-8601 with an offset, `NOW` or `NOW-<n>DAYS|HOURS|MINUTES`."""
    relative = _RELATIVE.match(value)
    if relative:
        amount, unit = relative.groups()
        return now - timedelta(**{unit.lower(): int(amount)}) if amount else now
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(1001, "Date format must be yyyy-MM-dd'T'HH:mm:ss.SSSZ") from None
    if parsed.tzinfo is None:
        raise bad_request(1001, "Date format must be yyyy-MM-dd'T'HH:mm:ss.SSSZ")
    return parsed


def search(
    payments: Iterable[SandboxPayment], query: Mapping[str, str], now: datetime
) -> dict[str, Any]:
    """`GET /v1/payments/search` over `payments`: `paging` and one page of `results`."""
    offset, limit = _int(query, "offset", 0), _int(query, "limit", 30)
    if offset < 0 or not 1 <= limit <= MAX_LIMIT:
        raise bad_request(1000, "Number of rows exceeded the limits")
    sort = query.get("sort", "date_created")
    if sort not in SORTS:
        raise bad_request(1003, "Invalid sort value")
    criteria = query.get("criteria", "desc")
    if criteria not in ("asc", "desc"):
        raise bad_request(1004, "Invalid criteria value")
    found = [wire for wire in (p.wire() for p in payments) if _matches(wire, query)]
    date_range = query.get("range")
    if date_range is not None:
        if date_range not in RANGES:
            raise bad_request(1, "Params Error: range")
        begin = query.get("begin_date")
        start = parse_date(begin, now) if begin is not None else None
        end = parse_date(query.get("end_date", "NOW"), now)
        found = [
            wire
            for wire in found
            if wire[date_range] is not None
            and (start is None or start <= datetime.fromisoformat(wire[date_range]))
            and datetime.fromisoformat(wire[date_range]) <= end
        ]
    present = [wire for wire in found if wire[sort] is not None]
    present.sort(key=lambda wire: _sort_key(wire[sort]), reverse=criteria == "desc")
    ordered = present + [wire for wire in found if wire[sort] is None]
    return {
        "paging": {"total": len(ordered), "limit": limit, "offset": offset},
        "results": ordered[offset : offset + limit],
    }


def _int(query: Mapping[str, str], name: str, default: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    if not value.isascii() or not value.lstrip("-").isdigit():
        raise bad_request(1, f"Params Error: {name}")
    return int(value)


def _matches(wire: Mapping[str, Any], query: Mapping[str, str]) -> bool:
    return all(
        query.get(name) is None or str(wire[name]) == query[name]
        for name in ("status", "external_reference", "id")
    )


def _sort_key(value: Any) -> Any:
    return datetime.fromisoformat(value) if isinstance(value, str) else value
