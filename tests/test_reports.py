"""`colmena report payments|invoices|licenses|audit`: ranges read in the operator's time zone,
Decimal amounts with their currency, totals per currency and status, CSV a spreadsheet opens
with accents intact, and rows streamed through a server-side cursor."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from colmena.domain.report_rows import BOM, SPECS, Renderer, ReportRangeError, parse_range
from colmena.store import reports
from colmena.store.audit import attribute, record_action
from tests.reports_support import (
    add_invoice,
    add_license,
    add_payment,
    request_cancellation,
    revoke_license,
    run_colmena,
)

ZONE = ZoneInfo("America/Mexico_City")
DAY = "2026-03-10"
# 23:30 local on the 10th is 05:30 UTC on the 11th: a UTC reading would put it a day late.
LATE_EVENING = datetime(2026, 3, 10, 23, 30, tzinfo=ZONE).astimezone(UTC)
NOON = datetime(2026, 3, 10, 12, 0, tzinfo=ZONE).astimezone(UTC)


def test_days_are_the_operators_and_the_end_day_is_included() -> None:
    period = parse_range("2026-03-01", "2026-03-31", zone=ZONE, max_days=366)
    assert period.start == datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    assert period.end == datetime(2026, 4, 1, 6, 0, tzinfo=UTC)
    assert period.local(period.start) == "2026-03-01T00:00:00-06:00"
    # A moment without offset is local; with one, as written; a moment's end is excluded.
    moments = parse_range("2026-03-01T08:00", "2026-03-01T20:00:00+00:00", zone=ZONE, max_days=1)
    assert moments.start == datetime(2026, 3, 1, 14, 0, tzinfo=UTC)
    assert moments.end == datetime(2026, 3, 1, 20, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "parameter", "words"),
    [
        ("2026-03-02", "2026-03-01", "to", "reversed"),
        ("2026-03-01T10:00", "2026-03-01T09:00", "to", "reversed"),
        ("2025-01-01", "2026-03-01", "to", "at most 366"),
        ("yesterday", "2026-03-01", "from", "not a date"),
        ("2026-03-01", "2026-02-30", "to", "not a date"),
    ],
)
def test_bad_ranges_say_what_is_wrong(start, end, parameter, words) -> None:
    with pytest.raises(ReportRangeError) as raised:
        parse_range(start, end, zone=ZONE, max_days=366)
    assert raised.value.parameter == parameter and words in str(raised.value)


async def _seed_payments(db) -> None:
    await add_payment(db, created_at=NOON, email="peña@example.com", amount_minor=150_000)
    await add_payment(db, created_at=LATE_EVENING, email='=HYPERLINK("http://x")')
    await add_payment(db, created_at=NOON, currency="USD", amount_minor=4_999)
    await add_payment(
        db,
        created_at=NOON,
        statuses=("approved", "refunded"),
        amount_minor=20_050,
        provider="mercadopago",
    )
    await add_payment(db, created_at=NOON + timedelta(days=1))  # the 11th: not in the report


async def test_payments_csv_opens_in_a_spreadsheet_with_accents_intact(db, settings) -> None:
    await _seed_payments(db)
    ran = await run_colmena(
        settings, "report", "payments", "--from", DAY, "--to", DAY, "--format", "csv"
    )
    assert ran.code == 0, ran.stderr
    assert ran.stdout.startswith(BOM.encode())
    text = ran.stdout.decode("utf-8")
    assert text.count("\r\n") == 5 and "\n" not in text.replace("\r\n", "")  # RFC 4180 lines
    rows = list(csv.DictReader(io.StringIO(text.removeprefix(BOM), newline="")))
    assert [row["customer_email"] for row in rows] == [
        "peña@example.com",
        "cliente@example.com",
        "cliente@example.com",
        '\'=HYPERLINK("http://x")',  # a formula would run in a spreadsheet: neutralised
    ]
    assert [row["amount"] for row in rows] == ["1500.00", "49.99", "200.50", "1500.00"]
    assert rows[-1]["created_at"] == "2026-03-10T23:30:00-06:00"
    assert "MXN approved: 2  3,000.00 MXN" in ran.stderr
    assert "MXN refunded: 1  200.50 MXN" in ran.stderr
    assert "USD approved: 1  49.99 USD" in ran.stderr


async def test_payments_json_has_decimal_amounts_and_totals_per_currency_and_status(
    db, settings
) -> None:
    await _seed_payments(db)
    ran = await run_colmena(
        settings, "report", "payments", "--from", DAY, "--to", DAY, "--format", "json"
    )
    assert ran.code == 0, ran.stderr
    document = json.loads(ran.text)
    assert document["from"] == "2026-03-10T00:00:00-06:00"
    assert document["to"] == "2026-03-11T00:00:00-06:00"
    assert document["totals"] == [
        {"currency": "MXN", "status": "approved", "count": 2, "amount": "3000.00"},
        {"currency": "MXN", "status": "refunded", "count": 1, "amount": "200.50"},
        {"currency": "USD", "status": "approved", "count": 1, "amount": "49.99"},
    ]
    assert {(r["amount"], r["currency"]) for r in document["rows"]} == {
        ("1500.00", "MXN"),
        ("49.99", "USD"),
        ("200.50", "MXN"),
    }
    only = await run_colmena(
        settings,
        "report",
        "payments",
        "--from",
        DAY,
        "--to",
        DAY,
        "--format",
        "json",
        "--provider",
        "mercadopago",
    )
    assert [r["provider"] for r in json.loads(only.text)["rows"]] == ["mercadopago"]


async def test_licenses_and_invoices_reports_show_their_states(db, settings) -> None:
    live = await add_payment(db, created_at=NOON, fiscal=True)
    await add_license(db, live)
    await add_invoice(db, live)
    refunded = await add_payment(
        db, created_at=NOON, statuses=("approved", "refunded"), fiscal=True
    )
    await revoke_license(db, await add_license(db, refunded))
    await request_cancellation(db, await add_invoice(db, refunded))

    licenses = await run_colmena(
        settings, "report", "licenses", "--from", DAY, "--to", DAY, "--format", "json"
    )
    assert licenses.code == 0, licenses.stderr
    document = json.loads(licenses.text)
    assert {(r["payment_id"], r["state"]) for r in document["rows"]} == {
        (live.id, "live"),
        (refunded.id, "revoked"),
    }
    assert "license_key" not in licenses.text and "CLM1." not in licenses.text
    assert document["totals"] == [
        {"currency": "MXN", "status": "live", "count": 1, "amount": "1500.00"},
        {"currency": "MXN", "status": "revoked", "count": 1, "amount": "1500.00"},
    ]

    # Invoices are dated when they were made (now), so their range is today's.
    today = datetime.now(ZONE).date().isoformat()
    invoices = await run_colmena(settings, "report", "invoices", "--from", today, "--to", today)
    assert invoices.code == 0, invoices.stderr
    header, *rows = invoices.text.splitlines()
    assert header.split("\t")[:6] == ["id", "payment_id", "cfdi_type", "series", "folio", "status"]
    states = {line.split("\t")[5]: line.split("\t")[12] for line in rows if "\t" in line}
    assert states == {"stamped": "-", "cancellation_requested": "requested"}
    assert "  MXN cancellation_requested: 1  1,500.00 MXN" in invoices.text


async def test_audit_report_exports_the_trail(db, settings) -> None:
    async with db.transaction():
        await attribute(db, actor="operator:cli:ana", cause="cli")
        await record_action(
            db,
            actor="operator:cli:ana",
            action="license.resend",
            subject_kind="license",
            subject_id="L-1",
            after={"reason": "pidió reenvío"},
            cause="cli",
        )
    today = datetime.now(ZONE).date().isoformat()
    ran = await run_colmena(
        settings, "report", "audit", "--from", today, "--to", today, "--format", "csv"
    )
    assert ran.code == 0, ran.stderr
    rows = list(csv.DictReader(io.StringIO(ran.stdout.decode().removeprefix(BOM), newline="")))
    resend = [row for row in rows if row["action"] == "license.resend"]
    assert len(resend) == 1
    assert json.loads(resend[0]["after"]) == {"reason": "pidió reenvío"}
    assert resend[0]["actor"] == "operator:cli:ana" and resend[0]["recorded_at"].endswith("-06:00")
    # The export sealed what it exports and names the head, which verify can hold it against.
    head = ran.stderr.split("audit chain head ", 1)[1].split()[0]
    seq, digest = head.split(":")
    last = max(rows, key=lambda row: int(row["seal_seq"]))
    assert all(row["seal_seq"] and len(row["seal_hash"]) == 64 for row in rows)
    assert (last["seal_seq"], last["seal_hash"]) == (seq, digest)
    verified = await run_colmena(settings, "audit", "verify", "--head", head)
    assert verified.code == 0, verified.stderr


async def test_a_reversed_or_too_long_report_is_one_line_and_exit_2(settings) -> None:
    for start, end in (("2026-03-10", "2026-03-01"), ("2020-01-01", "2026-01-01")):
        ran = await run_colmena(settings, "report", "payments", "--from", start, "--to", end)
        assert ran.code == 2 and ran.stdout == b""
        assert len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    shorter = await run_colmena(
        settings,
        "report",
        "payments",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-31",
        COLMENA_REPORT_MAX_DAYS="7",
    )
    assert shorter.code == 2 and "at most 7" in shorter.stderr


async def test_rows_stream_through_a_server_side_cursor_in_bounded_batches(db) -> None:
    """5000 payments read 100 at a time: while the report is being written, PostgreSQL holds
    the cursor (the rows are not in the client) and the client has fetched one batch."""
    await db.execute(
        "INSERT INTO payments (provider, provider_payment_id, amount_minor, currency, status, "
        "status_at, created_at) SELECT 'stripe', 'pi_bulk' || n, 1000 + n, 'MXN', 'approved', "
        "$1, $1::timestamptz + n * interval '1 second' FROM generate_series(1, 5000) AS n",
        NOON,
    )
    period = parse_range(DAY, DAY, zone=ZONE, max_days=1)
    renderer = Renderer(SPECS["payments"], period, "csv", "America/Mexico_City")
    rows = reports.report_rows(db, "payments", period.start, period.end, provider=None, fetch=100)
    written = [renderer.head(), renderer.row(await anext(rows))]
    # Named portals only: this very query runs in the unnamed one.
    open_cursors = "SELECT array_agg(statement) FROM pg_cursors WHERE name <> ''"
    (statement,) = await db.fetchval(open_cursors)
    assert "FROM payments" in statement
    async for row in rows:
        written.append(renderer.row(row))
    assert renderer.count == 5000 and len(written) == 5001
    assert renderer.totals.rows() == [
        {
            "currency": "MXN",
            "status": "approved",
            "count": 5000,
            "amount": Decimal(sum(1000 + n for n in range(1, 5001))) / 100,
        }
    ]
    assert await db.fetchval(open_cursors) is None  # closed with its snapshot
