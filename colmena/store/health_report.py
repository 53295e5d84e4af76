"""What the daily health report counts of one day: payments, licenses and invoices.

Counts and sums only: no customer, address or key leaves these queries, so the report cannot
carry one. Everything else the report shows comes from the queries `colmena status` already
uses (outbox backlog, rates, bots) and from `store.backups`.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from colmena.domain.health_report import DayActivity


async def day_activity(conn: asyncpg.Connection, start: datetime, end: datetime) -> DayActivity:
    """Activity in [start, end)."""
    payments = await conn.fetch(
        "SELECT status, count(*) AS n FROM payments "
        "WHERE created_at >= $1 AND created_at < $2 GROUP BY status ORDER BY status",
        start,
        end,
    )
    approved = await conn.fetch(
        "SELECT currency, sum(amount_minor)::bigint AS minor FROM payments "
        "WHERE approved_at >= $1 AND approved_at < $2 GROUP BY currency ORDER BY currency",
        start,
        end,
    )
    licenses = await conn.fetchrow(
        """
        SELECT count(*) FILTER (WHERE issued_at >= $1 AND issued_at < $2) AS issued,
               count(*) FILTER (WHERE revoked_at >= $1 AND revoked_at < $2) AS revoked
        FROM licenses
        """,
        start,
        end,
    )
    invoices = await conn.fetch(
        "SELECT status, count(*) AS n FROM invoices "
        "WHERE created_at >= $1 AND created_at < $2 GROUP BY status ORDER BY status",
        start,
        end,
    )
    failed = await conn.fetchval("SELECT count(*) FROM invoices WHERE status = 'failed'")
    return DayActivity(
        payments={row["status"]: row["n"] for row in payments},
        approved_minor={row["currency"]: row["minor"] for row in approved},
        licenses_issued=licenses["issued"],
        licenses_revoked=licenses["revoked"],
        invoices={row["status"]: row["n"] for row in invoices},
        invoices_failed_open=failed,
    )
