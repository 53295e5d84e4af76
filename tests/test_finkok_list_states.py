"""`colmena invoices list --state`: stamped, cancelling, cancelled, egreso and global, over the
invoices, their cancellations (migration 0017), credit notes (0018) and global invoices (0019)."""

from __future__ import annotations

import asyncpg
import pytest

from colmena.config import Settings
from tests.standins.csd import ISSUER_RFC
from tests.test_stamping import insert_payment, run_cli


async def invoice(
    db: asyncpg.Connection, folio: int, *, status: str = "stamped", egreso_of: str | None = None
) -> int:
    payment_id = await insert_payment(db)
    invoice_id: int = await db.fetchval(
        """
        INSERT INTO invoices (payment_id, issuer_rfc, series, folio, status, uuid, cfdi_type,
            related_uuid, refunded_through_minor)
        VALUES ($1, $2, 'A', $3, $4, CASE WHEN $4 = 'failed' THEN NULL ELSE gen_random_uuid()::text
            END, $5, $6, $7) RETURNING id
        """,
        payment_id,
        ISSUER_RFC,
        folio,
        status,
        "E" if egreso_of else "I",
        egreso_of,
        1000 if egreso_of else None,
    )
    return invoice_id


async def cancellation(db: asyncpg.Connection, invoice_id: int, state: str) -> None:
    await db.execute(
        "INSERT INTO invoice_cancellations (invoice_id, state, motive, needs_acceptance, source) "
        "VALUES ($1, $2, '02', true, 'refund')",
        invoice_id,
        state,
    )


def listed_ids(output: str) -> set[int]:
    return {int(line.split()[0]) for line in output.splitlines()[1:]}


async def test_each_state_lists_exactly_its_invoices(
    db: asyncpg.Connection, settings: Settings
) -> None:
    in_force = await invoice(db, 1)
    rejected = await invoice(db, 2)
    await cancellation(db, rejected, "rejected")
    waiting = await invoice(db, 3)
    await cancellation(db, waiting, "awaiting_acceptance")
    flagged = await invoice(db, 4, status="cancellation_requested")
    cancelled = await invoice(db, 5)
    await cancellation(db, cancelled, "cancelled")
    expired = await invoice(db, 6)
    await cancellation(db, expired, "expired")
    credit = await invoice(db, 7, egreso_of="11111111-2222-3333-4444-555555555555")
    await invoice(db, 8, status="failed")
    expected = {
        "stamped": {in_force, rejected},
        "cancelling": {waiting, flagged},
        "cancelled": {cancelled, expired},
        "egreso": {credit},
    }

    for state, ids in expected.items():
        result = await run_cli(settings, "invoices", "list", "--state", state)
        assert result.exit_code == 0, result.output
        assert listed_ids(result.output) == ids, (state, result.output)


async def test_global_lists_the_global_invoices(db: asyncpg.Connection, settings: Settings) -> None:
    empty = await run_cli(settings, "invoices", "list", "--state", "global")
    assert empty.exit_code == 0 and empty.output.strip() == "no global invoices"
    global_id = await db.fetchval(
        """
        INSERT INTO global_invoices (issuer_rfc, periodicity, period_first, period_after, status,
            series, folio, total, uuid)
        VALUES ($1, '04', '2026-10-01', '2026-11-01', 'stamped', 'G', 9, 348.00,
            'AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE') RETURNING id
        """,
        ISSUER_RFC,
    )
    for position in range(2):
        await db.execute(
            "INSERT INTO global_invoice_payments (global_invoice_id, payment_id, position) "
            "VALUES ($1, $2, $3)",
            global_id,
            await insert_payment(db),
            position,
        )

    result = await run_cli(settings, "invoices", "list", "--state", "global")

    assert result.exit_code == 0, result.output
    [row] = result.output.splitlines()[1:]
    assert row.split()[:6] == [str(global_id), "2026-10-01", "monthly", "stamped", "G9", "2"]
    assert "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE" in row


@pytest.mark.parametrize("args", [["--state", "paid"], ["--state", "egreso", "--status", "failed"]])
async def test_bad_filters_are_refused(settings: Settings, args: list[str]) -> None:
    result = await run_cli(settings, "invoices", "list", *args)

    assert result.exit_code == 2 and (
        "Invalid value" in result.output or "not both" in result.output
    )
