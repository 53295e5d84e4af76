"""Operators' reports as data: the range they cover, their columns, their totals, and the CSV and
JSON text each row becomes.

Operators think in their own calendar: `--from 2026-03-01 --to 2026-03-31` means from midnight
of the first to the end of the thirty-first *in the operator's time zone*, and every timestamp
of a report is shown there, with its offset, so a row is never read an hour off. Storage stays
UTC; only the edges move.

Rows are produced one at a time (the store reads them through a server-side cursor), so the
formats here turn one row into its text and totals grow row by row: a year of payments never
sits in memory. CSV is RFC 4180 (comma, CRLF, quotes doubled) in UTF-8 with a byte-order mark,
which is what makes spreadsheet programs read "Peña" as written; a text cell that a
spreadsheet would run as a formula (= + - @ and control characters first) is prefixed with an
apostrophe, as OWASP's CSV injection advice says.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from colmena.domain.money import format_money

BOM = "\ufeff"
REPORT_KINDS = ("payments", "invoices", "licenses", "audit")
PROVIDERS = ("stripe", "mercadopago", "bitso")
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ReportRangeError(ValueError):
    """A range no report is made for: unreadable, reversed or longer than allowed.
    `parameter` names the bound at fault (from, to)."""

    def __init__(self, message: str, parameter: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class ReportRange:
    """[start, end) in UTC, and the zone the operator gave it in."""

    start: datetime
    end: datetime
    zone: tzinfo

    def local(self, moment: datetime | None) -> str | None:
        """A stored (UTC) moment as the operator reads it: ISO 8601 with the zone's offset."""
        if moment is None:
            return None
        try:
            local = moment.astimezone(self.zone)
        except OverflowError:  # a clamped bound at the calendar's edge: UTC is all there is
            local = moment.astimezone(UTC)
        offset = local.utcoffset()
        if offset is not None and offset.seconds % 60:  # local mean time of centuries ago:
            local = moment.astimezone(UTC)  # RFC 3339 offsets have no seconds
        return local.isoformat(timespec="seconds")


def _moment(text: str, zone: tzinfo, *, end: bool, parameter: str) -> datetime:
    """A local date (a whole day: an end date includes that day) or a datetime; a datetime
    with no offset is local, one with an offset is taken as written."""
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), time(), zone)
        else:
            parsed = datetime.fromisoformat(text)
            moment = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)
    except ValueError:
        raise ReportRangeError(
            f"--{parameter} {text!r} is not a date (2026-03-31) or a datetime (2026-03-31T18:00)",
            parameter,
        ) from None
    try:
        return (moment + timedelta(days=1) if end and len(text) == 10 else moment).astimezone(UTC)
    except OverflowError:  # the calendar's first or last day: the range runs to its edge
        return EARLIEST if moment.year == 1 else LATEST


def parse_range(start: str, end: str, *, zone: tzinfo, max_days: int) -> ReportRange:
    """The range `start`..`end` (dates include their whole day) as UTC instants."""
    first = _moment(start.strip(), zone, end=False, parameter="from")
    after = _moment(end.strip(), zone, end=True, parameter="to")
    if after <= first:
        raise ReportRangeError(
            f"the range is reversed or empty: --to {end} is not after --from {start}", "to"
        )
    if after - first > timedelta(days=max_days):
        raise ReportRangeError(
            f"the range covers {(after - first).days} days or more; at most {max_days} "
            "(COLMENA_REPORT_MAX_DAYS): split it",
            "to",
        )
    return ReportRange(first, after, zone)


@dataclass(frozen=True)
class Column:
    name: str
    kind: str = "text"  # text | money | moment | number | json


@dataclass
class Totals:
    """Count and sum per (currency, status), grown one row at a time."""

    money: bool
    groups: dict[tuple[str, str], tuple[int, Decimal]] = field(default_factory=dict)

    def add(self, currency: str, status: str, amount: Decimal | None) -> None:
        count, total = self.groups.get((currency, status), (0, Decimal(0)))
        self.groups[(currency, status)] = (count + 1, total + (amount or Decimal(0)))

    def rows(self) -> list[dict[str, Any]]:
        """Sorted by currency then status; amounts as Decimal, with their currency."""
        return [
            {"currency": currency or None, "status": status, "count": count}
            | ({"amount": total} if self.money else {})
            for (currency, status), (count, total) in sorted(self.groups.items())
        ]


@dataclass(frozen=True)
class ReportSpec:
    """One report's columns and which of them its totals group by."""

    kind: str
    columns: tuple[Column, ...]
    status_column: str
    currency_column: str | None = None
    amount_column: str | None = None

    def names(self) -> list[str]:
        return [column.name for column in self.columns]

    def totals(self) -> Totals:
        return Totals(money=self.amount_column is not None)

    def count(self, totals: Totals, row: Mapping[str, Any]) -> None:
        currency = str(row[self.currency_column] or "") if self.currency_column else ""
        amount = row[self.amount_column] if self.amount_column else None
        totals.add(currency, str(row[self.status_column]), amount)


SPECS: dict[str, ReportSpec] = {
    "payments": ReportSpec(
        "payments",
        (
            Column("id", "number"),
            Column("provider"),
            Column("provider_payment_id"),
            Column("created_at", "moment"),
            Column("status"),
            Column("status_at", "moment"),
            Column("approved_at", "moment"),
            Column("amount", "money"),
            Column("currency"),
            Column("customer_email"),
            Column("product_ref"),
            Column("product_kind"),
            Column("tenant_ref"),
            Column("order_id"),
        ),
        status_column="status",
        currency_column="currency",
        amount_column="amount",
    ),
    "invoices": ReportSpec(
        "invoices",
        (
            Column("id", "number"),
            Column("payment_id", "number"),
            Column("cfdi_type"),
            Column("series"),
            Column("folio", "number"),
            Column("status"),
            Column("uuid"),
            Column("receiver_rfc"),
            Column("total", "money"),
            Column("currency"),
            Column("created_at", "moment"),
            Column("stamped_at", "moment"),
            Column("cancellation"),
            Column("provider"),
        ),
        status_column="status",
        currency_column="currency",
        amount_column="total",
    ),
    "licenses": ReportSpec(
        "licenses",
        (
            Column("id"),
            Column("payment_id", "number"),
            Column("product_ref"),
            Column("edition"),
            Column("seats", "number"),
            Column("customer_email"),
            Column("issued_at", "moment"),
            Column("expires_at", "moment"),
            Column("state"),
            Column("revoked_at", "moment"),
            Column("revoked_reason"),
            Column("amount", "money"),
            Column("currency"),
            Column("provider"),
        ),
        status_column="state",
        currency_column="currency",
        amount_column="amount",
    ),
    "audit": ReportSpec(
        "audit",
        (
            Column("id", "number"),
            Column("recorded_at", "moment"),
            Column("actor"),
            Column("action"),
            Column("subject_kind"),
            Column("subject_id"),
            Column("before", "json"),
            Column("after", "json"),
            Column("cause"),
            Column("seal_seq", "number"),
            Column("seal_hash"),
        ),
        status_column="action",
    ),
}


def license_state(revoked_at: datetime | None, suspended_at: datetime | None) -> str:
    if revoked_at is not None:
        return "revoked"
    return "suspended" if suspended_at is not None else "live"


def shown(spec: ReportSpec, row: Mapping[str, Any], period: ReportRange) -> dict[str, Any]:
    """A stored row as the report shows it: moments local with offset, money as Decimal,
    JSON as parsed values; the columns in the spec's order."""
    out: dict[str, Any] = {}
    for column in spec.columns:
        value = row[column.name]
        if column.kind == "moment":
            value = period.local(value)
        elif column.kind == "json" and isinstance(value, str):
            value = json.loads(value)
        elif column.kind == "text" and value is not None:
            value = str(value)
        out[column.name] = value
    return out


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal | int):
        return str(value)
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


class CsvLines:
    """RFC 4180 text, one row at a time (the header first, after the BOM)."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def line(self, values: Iterable[Any]) -> str:
        self._writer.writerow([_cell(value) for value in values])
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text

    def header(self, names: Sequence[str]) -> str:
        return BOM + self.line(names)


def json_value(value: Any) -> Any:
    """JSON has no Decimal: amounts travel as strings ("1500.00"), never as floats."""
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def json_text(value: Any) -> str:
    return json.dumps(value, default=json_value, ensure_ascii=False)


def json_head(spec: ReportSpec, period: ReportRange, zone_name: str) -> str:
    """The start of a streamed JSON report, up to its first row."""
    head = {
        "report": spec.kind,
        "from": period.local(period.start),
        "to": period.local(period.end),
        "time_zone": zone_name,
        "columns": spec.names(),
    }
    return json_text(head)[:-1] + ', "rows": ['


def json_tail(totals: Totals) -> str:
    return '], "totals": ' + json_text(totals.rows()) + "}\n"


def _plain(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def totals_lines(totals: Totals) -> list[str]:
    rows = totals.rows()
    if not rows:
        return ["totals: no rows"]
    lines = ["totals:"]
    for row in rows:
        if "amount" in row and row["currency"]:
            money = "  " + format_money(row["amount"], row["currency"])
        else:
            money = ""
        lines.append(f"  {row['currency'] or '-'} {row['status']}: {row['count']}{money}")
    return lines


FORMATS = ("table", "csv", "json")


class Renderer:
    """One report's text in `fmt`, produced as its rows arrive: `head()`, `row()` for each
    stored row, `tail()`. Totals grow as rows pass; CSV carries none (one table per file: the
    CLI prints them on stderr), JSON and the table end with them."""

    def __init__(self, spec: ReportSpec, period: ReportRange, fmt: str, zone_name: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown report format {fmt!r}")
        self.spec = spec
        self.period = period
        self.fmt = fmt
        self.zone_name = zone_name
        self.totals = spec.totals()
        self.count = 0
        self._csv = CsvLines()

    def head(self) -> str:
        if self.fmt == "csv":
            return self._csv.header(self.spec.names())
        if self.fmt == "json":
            return json_head(self.spec, self.period, self.zone_name)
        return "\t".join(self.spec.names()) + "\n"

    def row(self, stored: Mapping[str, Any]) -> str:
        row = shown(self.spec, stored, self.period)
        self.spec.count(self.totals, row)
        self.count += 1
        if self.fmt == "csv":
            return self._csv.line(row[name] for name in self.spec.names())
        if self.fmt == "json":
            return ("" if self.count == 1 else ", ") + json_text(row)
        return (
            "\t".join("-" if row[name] is None else _plain(row[name]) for name in self.spec.names())
            + "\n"
        )

    def tail(self) -> str:
        if self.fmt == "csv":
            return ""
        if self.fmt == "json":
            return json_tail(self.totals)
        return "\n".join(totals_lines(self.totals)) + "\n"
