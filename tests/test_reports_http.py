"""The reports and the reconciliation as JSON (and CSV) for operators, behind the admin token:
the same rows and totals as the CLI, streamed in chunks, bad ranges a 400, every answer as the
OpenAPI document says."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from colmena.domain.report_rows import BOM
from tests.bots_support import ADMIN_TOKEN, bearer
from tests.reports_support import add_license, add_payment
from tests.test_openapi import Checked

ZONE = ZoneInfo("America/Mexico_City")
DAY = "2026-03-10"
NOON = datetime(2026, 3, 10, 12, 0, tzinfo=ZONE).astimezone(UTC)
REPORT = "/api/v1/admin/reports/{kind}"
RECONCILE = "/api/v1/admin/reconcile"
AUDIT = "/api/v1/admin/reports/audit"


@pytest.fixture
def admin_settings(settings):
    return settings.model_copy(update={"bot_admin_token": SecretStr(ADMIN_TOKEN)})


async def test_reports_and_reconciliation_answer_as_documented(
    db, admin_settings, make_client
) -> None:
    licensed = await add_payment(db, created_at=NOON, email="josé@example.com")
    await add_license(db, licensed)
    unlicensed = await add_payment(db, created_at=NOON, currency="USD", amount_minor=4_999)
    api = Checked(await make_client(admin_settings))
    admin = bearer(ADMIN_TOKEN)

    status, document = await api.call(
        REPORT, "GET", f"/api/v1/admin/reports/payments?from={DAY}&to={DAY}", headers=admin
    )
    assert status == 200
    assert document["totals"] == [
        {"currency": "MXN", "status": "approved", "count": 1, "amount": "1500.00"},
        {"currency": "USD", "status": "approved", "count": 1, "amount": "49.99"},
    ]
    assert {row["customer_email"] for row in document["rows"]} == {
        "josé@example.com",
        "cliente@example.com",
    }
    for kind in ("licenses", "invoices"):
        status, document = await api.call(
            REPORT, "GET", f"/api/v1/admin/reports/{kind}?from={DAY}&to={DAY}", headers=admin
        )
        assert status == 200 and document["report"] == kind
    status, body = await api.call(
        REPORT,
        "GET",
        f"/api/v1/admin/reports/payments?from={DAY}&to={DAY}&format=csv&provider=stripe",
        headers=admin,
    )
    assert status == 200 and body.startswith(BOM.encode())
    rows = list(csv.DictReader(io.StringIO(body.decode().removeprefix(BOM), newline="")))
    assert len(rows) == 2 and rows[0]["customer_email"] == "josé@example.com"
    today = datetime.now(ZONE).date().isoformat()
    status, document = await api.call(
        AUDIT, "GET", f"{AUDIT}?from={today}&to={today}", headers=admin
    )
    assert status == 200 and document["rows"], "seeding the payments wrote audit rows"

    status, found = await api.call(
        RECONCILE, "GET", f"{RECONCILE}?from={DAY}&to={DAY}", headers=admin
    )
    assert status == 200 and found["ok"] is False
    assert [(d["payment_id"], d["kind"]) for d in found["disagreements"]] == [
        (unlicensed.id, "approved_no_license")
    ]
    status, found = await api.call(
        RECONCILE, "GET", f"{RECONCILE}?from=2026-03-11&to=2026-03-11", headers=admin
    )
    assert status == 200 and found == {
        "from": "2026-03-11T00:00:00-06:00",
        "to": "2026-03-12T00:00:00-06:00",
        "time_zone": "America/Mexico_City",
        "ok": True,
        "disagreements": [],
    }

    # Refusals: no token, a reversed or too long range, an unknown report or parameter.
    assert (await api.call(RECONCILE, "GET", f"{RECONCILE}?from={DAY}&to={DAY}"))[0] == 401
    status, error = await api.call(
        REPORT, "GET", "/api/v1/admin/reports/payments?from=2026-03-10&to=2026-03-01", headers=admin
    )
    assert status == 400 and error["error"]["parameter"] == "to"
    assert "reversed" in error["error"]["message"]
    status, error = await api.call(
        RECONCILE, "GET", f"{RECONCILE}?from=2020-01-01&to=2026-01-01", headers=admin
    )
    assert status == 400 and "at most 366" in error["error"]["message"]
    for query in (f"from={DAY}", f"from={DAY}&to={DAY}&limit=5", f"from={DAY}&to={DAY}&format=xls"):
        assert (
            await api.call(REPORT, "GET", f"/api/v1/admin/reports/payments?{query}", headers=admin)
        )[0] == 400
    assert (
        await api.call(
            AUDIT,
            "GET",
            f"{AUDIT}?from={DAY}&to={DAY}&provider=stripe",
            headers=admin,
        )
    )[0] == 400
    assert (
        await api.call(
            REPORT, "GET", f"/api/v1/admin/reports/refunds?from={DAY}&to={DAY}", headers=admin
        )
    )[0] == 404
    api.assert_covers("reports")


async def test_a_large_csv_report_is_streamed_in_chunks(db, admin_settings, make_client) -> None:
    await db.execute(
        "INSERT INTO payments (provider, provider_payment_id, amount_minor, currency, status, "
        "status_at, created_at, customer_email) SELECT 'mercadopago', 'mp' || n, 1000 + n, 'MXN', "
        "'approved', $1, $1::timestamptz + n * interval '1 second', 'comprador' || n || "
        "'@ejemplo.mx' FROM generate_series(1, 6000) AS n",
        NOON,
    )
    client = await make_client(admin_settings.model_copy(update={"report_fetch_rows": 200}))
    response = await client.get(
        f"/api/v1/admin/reports/payments?from={DAY}&to={DAY}&format=csv",
        headers=bearer(ADMIN_TOKEN),
    )
    assert response.status == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.headers
    assert (
        response.headers["Content-Disposition"] == 'attachment; filename="payments-2026-03-10.csv"'
    )
    chunks = [chunk async for chunk in response.content.iter_any()]
    body = b"".join(chunks)
    assert len(body) > 6000 * 60 and body.count(b"\r\n") == 6001
    assert body.endswith(b"\r\n") and b"comprador6000@ejemplo.mx" in body
    last = datetime(2026, 3, 10, 12, 0, tzinfo=ZONE) + timedelta(seconds=6000)
    assert last.isoformat().encode() in body
