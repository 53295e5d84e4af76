"""`colmena reconcile report`: every payment of a range joined with its license, invoice,
cancellation, credit notes and order, each disagreement found, exit 1 for a cron to alert on,
exit 0 when all agree; and `--provider-check` against the providers' own records."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from colmena.domain.reconciliation import Held, PaymentFacts, compare_with_provider, judge
from colmena.gateways import mercadopago
from colmena.gateways.provider_records import stripe_record
from colmena.store.reconciliation import find_disagreements
from tests.reports_support import (
    add_credit_note,
    add_invoice,
    add_license,
    add_order,
    add_payment,
    request_cancellation,
    revoke_license,
    run_colmena,
    settle_order,
)
from tests.standins.mercadopago_api import ACCESS_TOKEN, MercadoPagoApi
from tests.standins.stripe_balance import StripeBalanceApi, charge

ZONE = ZoneInfo("America/Mexico_City")


def _day(days_ago: int) -> tuple[str, datetime]:
    """A local day and its noon (UTC), `days_ago` before today in the operator's zone."""
    day = datetime.now(ZONE).date() - timedelta(days=days_ago)
    return day.isoformat(), datetime.combine(day, time(12), ZONE).astimezone(UTC)


async def _clean_payment(db, created_at: datetime) -> int:
    """Approved, licensed and invoiced for what was paid: nothing to say."""
    payment = await add_payment(db, created_at=created_at, fiscal=True)
    await add_license(db, payment)
    await add_invoice(db, payment)
    return payment.id


async def test_each_disagreement_kind_is_found_and_exits_1(db, settings) -> None:
    day, noon = _day(3)
    clean = await _clean_payment(db, noon)

    no_license = await add_payment(db, created_at=noon)
    no_invoice = await add_payment(db, created_at=noon, fiscal=True)
    await add_license(db, no_invoice)

    refunded_live = await add_payment(
        db, created_at=noon, statuses=("approved", "refunded"), fiscal=True
    )
    await add_license(db, refunded_live)
    await add_invoice(db, refunded_live)

    refunded_credited = await add_payment(
        db, created_at=noon, statuses=("approved", "refunded"), fiscal=True
    )
    await revoke_license(db, await add_license(db, refunded_credited))
    invoice = await add_invoice(db, refunded_credited)
    await add_credit_note(db, refunded_credited, invoice, refunded_credited.amount_minor)

    charged_back = await add_payment(
        db, created_at=noon, statuses=("approved", "charged_back"), fiscal=True
    )
    await revoke_license(db, await add_license(db, charged_back))
    await request_cancellation(db, await add_invoice(db, charged_back))

    order_id = await add_order(db, amount="1500.00")
    short = await add_payment(
        db, created_at=noon, amount_minor=140_000, metadata={"order_id": str(order_id)}
    )
    short = await settle_order(db, short)
    await add_license(db, short)

    misbilled = await add_payment(db, created_at=noon, fiscal=True)
    await add_license(db, misbilled)
    await add_invoice(db, misbilled, total=Decimal("1000.00"))

    # Approved a minute ago: its license may still be in the queue.
    await add_payment(db, created_at=noon, status_age=timedelta(minutes=1))
    # Outside the range: not this report's business.
    await add_payment(db, created_at=noon - timedelta(days=5))

    expected = {
        (no_license.id, "approved_no_license"),
        (no_invoice.id, "approved_no_invoice"),
        (refunded_live.id, "reversed_license_live"),
        (refunded_live.id, "reversed_invoice_live"),
        (short.id, "order_amount_differs"),
        (misbilled.id, "invoice_amount_differs"),
    }
    start = datetime.combine(noon.astimezone(ZONE).date(), time(), ZONE)
    found = await find_disagreements(db, start, start + timedelta(days=1))
    assert {(d.payment_id, d.kind) for d in found} == expected
    assert clean not in {d.payment_id for d in found}
    by_kind = {d.kind: d.detail for d in found}
    assert by_kind["order_amount_differs"] == (
        f"paid 1,400.00 MXN, order {order_id} is 1,500.00 MXN"
    )

    ran = await run_colmena(settings, "reconcile", "report", "--from", day, "--to", day)
    assert ran.code == 1, ran.stderr
    lines = ran.text.splitlines()
    assert {(int(line.split("\t")[0]), line.split("\t")[3]) for line in lines} == expected
    assert "6 disagreement(s)" in ran.stderr

    as_json = await run_colmena(
        settings, "reconcile", "report", "--from", day, "--to", day, "--format", "json"
    )
    assert as_json.code == 1
    document = json.loads(as_json.text)
    assert document["ok"] is False and document["time_zone"] == "America/Mexico_City"
    assert document["from"].endswith("-06:00")
    assert {(d["payment_id"], d["kind"]) for d in document["disagreements"]} == expected


async def test_a_range_where_everything_agrees_exits_0(db, settings) -> None:
    day, noon = _day(2)
    await _clean_payment(db, noon)
    refunded = await add_payment(
        db, created_at=noon, statuses=("approved", "refunded"), fiscal=True
    )
    await revoke_license(db, await add_license(db, refunded))
    await request_cancellation(db, await add_invoice(db, refunded))
    plan = await add_payment(db, created_at=noon, product_kind="plan")
    assert plan.status == "approved"

    ran = await run_colmena(settings, "reconcile", "report", "--from", day, "--to", day)
    assert ran.code == 0, (ran.stdout, ran.stderr)
    assert ran.text == ""
    assert "0 disagreement(s)" in ran.stderr


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-03-10", "2026-03-01", "reversed"),
        ("2024-01-01", "2026-01-01", "at most 366"),
        ("2026-13-01", "2026-03-01", "not a date"),
    ],
)
async def test_a_bad_range_is_one_line_and_exit_2(settings, start, end, message) -> None:
    ran = await run_colmena(settings, "reconcile", "report", "--from", start, "--to", end)
    assert ran.code == 2
    assert ran.stdout == b""
    assert len(ran.stderr.strip().splitlines()) == 1 and message in ran.stderr


async def test_provider_check_against_mercado_pago(db, settings) -> None:
    api = MercadoPagoApi()
    url = await api.start()
    try:
        client = mercadopago.MercadoPagoClient(
            access_token=ACCESS_TOKEN, base_url=url, timeout_s=5.0
        )
        made = [
            await asyncio.to_thread(
                mercadopago.create_test_payment,
                client,
                "approved",
                amount=Decimal(amount),
                email="peña@example.com",
                description="Colmena",
                metadata={},
            )
            for amount in ("1500.00", "900.00", "250.00", "75.50")
        ]
        now = datetime.now(UTC)
        agrees, says_refunded, other_amount, unknown = (str(p["id"]) for p in made)
        for ppid, statuses, minor in (
            (agrees, ("approved",), 150_000),
            (says_refunded, ("approved", "refunded"), 90_000),
            (other_amount, ("approved",), 20_000),
            ("999000111", ("approved",), 5_000),
        ):
            await add_payment(
                db,
                created_at=now,
                provider="mercadopago",
                provider_payment_id=ppid,
                statuses=statuses,
                amount_minor=minor,
                product_kind=None,
            )
        today = now.astimezone(ZONE).date().isoformat()
        ran = await run_colmena(
            settings,
            "reconcile",
            "report",
            "--from",
            today,
            "--to",
            today,
            "--provider",
            "mercadopago",
            "--provider-check",
            "--format",
            "json",
            COLMENA_MERCADOPAGO_ACCESS_TOKEN=ACCESS_TOKEN,
            COLMENA_MERCADOPAGO_API_URL=url,
        )
    finally:
        await api.stop()
    assert ran.code == 1, ran.stderr
    document = json.loads(ran.text)
    assert document["provider_checked"] == ["mercadopago"]
    assert {(d["provider_payment_id"], d["kind"]) for d in document["disagreements"]} == {
        (says_refunded, "provider_status_differs"),
        (other_amount, "provider_amount_differs"),
        ("999000111", "missing_at_provider"),
        (unknown, "missing_at_colmena"),
    }
    assert api.calls("/v1/payments/search")


async def test_provider_check_against_stripe_balance_transactions(db, settings) -> None:
    now = datetime.now(UTC)
    charges = [charge(f"pi_match{n:03d}", 10_000 + n, "mxn", now) for n in range(105)]
    charges += [
        charge("pi_refunded", 50_000, "mxn", now, refunded=True),
        charge("pi_unknown", 7_000, "mxn", now),
        charge("pi_old", 7_000, "mxn", now - timedelta(days=20)),
    ]
    await db.executemany(
        "INSERT INTO payments (provider, provider_payment_id, amount_minor, currency, status, "
        "status_at, approved_at, created_at) VALUES ('stripe', $1, $2, 'MXN', 'approved', $3, "
        "$3, $3)",
        [(f"pi_match{n:03d}", 10_000 + n, now) for n in range(105)]
        + [("pi_refunded", 50_000, now), ("pi_colmena_only", 3_000, now)],
    )
    api = StripeBalanceApi(charges)
    url = await api.start()
    try:
        today = now.astimezone(ZONE).date().isoformat()
        ran = await run_colmena(
            settings,
            "reconcile",
            "report",
            "--from",
            today,
            "--to",
            today,
            "--provider-check",
            "--format",
            "json",
            COLMENA_STRIPE_SECRET_KEY="sk_test_balance",
            COLMENA_STRIPE_API_URL=url,
        )
    finally:
        await api.stop()
    assert ran.code == 1, ran.stderr
    assert "mercadopago not checked: COLMENA_MERCADOPAGO_ACCESS_TOKEN is not set" in ran.stderr
    document = json.loads(ran.text)
    assert document["provider_checked"] == ["stripe"]
    assert {(d["provider_payment_id"], d["kind"]) for d in document["disagreements"]} == {
        ("pi_refunded", "provider_status_differs"),
        ("pi_unknown", "missing_at_colmena"),
        ("pi_colmena_only", "missing_at_provider"),
    }
    pages = api.requests
    assert len(pages) == 2, pages  # 108 transactions in the window, 100 a page
    assert pages[0]["expand[]"] == ["data.source"] and "starting_after" in pages[1]
    assert pages[0]["authorization"] == "Bearer sk_test_balance"


async def test_provider_check_with_no_provider_configured_is_exit_2(settings) -> None:
    ran = await run_colmena(
        settings,
        "reconcile",
        "report",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-02",
        "--provider-check",
    )
    assert ran.code == 2
    assert "no provider can be checked" in ran.stderr


NOW = datetime(2026, 3, 10, 18, 0, tzinfo=UTC)


def _facts(**changes) -> PaymentFacts:
    base = PaymentFacts(
        payment_id=7,
        provider="stripe",
        provider_payment_id="pi_7",
        status="refunded",
        status_at=NOW - timedelta(hours=1),
        approved_at=NOW - timedelta(days=1),
        amount_minor=150_000,
        currency="MXN",
        product_kind=None,
        wants_invoice=True,
        invoice_id=3,
        invoice_status="stamped",
        invoice_total=Decimal("1500.00"),
        invoice_currency="MXN",
    )
    return replace(base, **changes)


@pytest.mark.parametrize(
    ("changes", "kinds"),
    [
        ({}, ["reversed_invoice_live"]),
        ({"credited_minor": 100_000}, ["reversed_invoice_live"]),  # credited in part only
        ({"credited_minor": 150_000}, []),
        ({"cancellation_state": "awaiting_acceptance"}, []),  # the receiver still deciding
        ({"cancellation_state": "rejected"}, ["reversed_invoice_live"]),
        ({"invoice_status": "failed"}, []),  # nothing was stamped: nothing to cancel
        ({"status_at": NOW - timedelta(minutes=5)}, []),  # within the grace period
        (
            {
                "invoice_id": None,
                "invoice_status": None,
                "invoice_total": None,
                "on_global_invoice": True,
            },
            ["reversed_invoice_live"],
        ),
        (
            {"status": "charged_back", "license_id": "L", "cancellation_state": "cancelled"},
            ["reversed_license_live"],
        ),
        (
            {"invoice_total": Decimal("1500.005")},
            ["reversed_invoice_live", "invoice_amount_differs"],
        ),
        ({"status": "approved", "invoice_currency": "USD"}, ["invoice_amount_differs"]),
    ],
)
def test_the_rules_of_a_reversed_payment(changes, kinds) -> None:
    found = judge(_facts(**changes), now=NOW, grace=timedelta(minutes=15))
    assert [d.kind for d in found] == kinds


def test_stripe_records_say_which_statuses_agree() -> None:
    made = datetime(2026, 3, 10, tzinfo=UTC)
    disputed = charge("pi_d", 500, "mxn", made, disputed=True)
    record = stripe_record({"type": "charge", "created": 1, "source": disputed})
    assert record is not None and record.provider_payment_id == "pi_d"
    assert record.currency == "MXN" and record.created_at == made
    assert compare_with_provider(record, Held(1, "in_mediation", 500, "MXN")) == []
    assert [d.kind for d in compare_with_provider(record, Held(1, "rejected", 500, "MXN"))] == [
        "provider_status_differs"
    ]
    partial = charge("pi_p", 500, "mxn", made) | {"amount_refunded": 100}
    record = stripe_record({"type": "payment", "created": 1, "source": partial})
    assert record is not None and record.status == "partially_refunded"
    assert compare_with_provider(record, Held(2, "approved", 500, "MXN")) == []
    assert stripe_record({"type": "payout", "created": 1, "source": partial}) is None
