"""Queries on payments and their event history (one table for every provider)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

_COLUMNS = (
    "id, provider, provider_payment_id, amount_minor, currency, customer_email, customer_locale, "
    "tenant_ref, product_ref, product_kind, metadata, status, status_at, approved_at, created_at, "
    "updated_at"
)


@dataclass(frozen=True)
class Payment:
    """A payment as colmena knows it; `metadata` holds the provider metadata (see
    actors.payments)."""

    id: int
    provider: str
    provider_payment_id: str
    amount_minor: int
    currency: str
    customer_email: str | None
    customer_locale: str | None
    tenant_ref: str | None
    product_ref: str | None
    product_kind: str | None
    metadata: dict[str, Any]
    status: str
    status_at: datetime
    approved_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class PaymentEvent:
    source: str
    status: str
    provider_at: datetime
    applied: bool
    reason: str | None
    recorded_at: datetime


def _payment(row: asyncpg.Record) -> Payment:
    return Payment(**dict(row))


def qualified_columns(alias: str) -> str:
    """The payment's columns as `alias.column`, for a query that joins payments to others."""
    return ", ".join(f"{alias}.{column.strip()}" for column in _COLUMNS.split(","))


def payment_from(row: asyncpg.Record) -> Payment:
    """The payment among a joined row's columns (`qualified_columns`)."""
    return Payment(**{name: row[name] for name in Payment.__dataclass_fields__})


async def get(
    conn: asyncpg.Connection, payment_id: int, *, for_update: bool = False
) -> Payment | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM payments WHERE id = $1{lock}", payment_id)
    return _payment(row) if row else None


async def get_by_provider_id(
    conn: asyncpg.Connection, provider: str, provider_payment_id: str
) -> Payment | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM payments WHERE provider = $1 AND provider_payment_id = $2",
        provider,
        provider_payment_id,
    )
    return _payment(row) if row else None


async def lock_or_create(conn: asyncpg.Connection, fields: dict[str, Any]) -> tuple[Payment, bool]:
    """The payment row, locked for this transaction, in one statement: created (status `new`)
    if unknown, else completed with what an earlier, thinner event did not carry (email,
    product, metadata: what it holds wins). Returns (payment, created).

    ON CONFLICT DO UPDATE, not DO NOTHING and a second SELECT: the update locks the row, waits
    for a concurrent inserter of the same payment and then reads its committed row.
    """
    row = await conn.fetchrow(
        f"""
        INSERT INTO payments AS p (provider, provider_payment_id, amount_minor, currency,
            customer_email, customer_locale, tenant_ref, product_ref, product_kind, metadata,
            status, status_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'new', $11)
        ON CONFLICT (provider, provider_payment_id) DO UPDATE SET
            customer_email  = coalesce(p.customer_email, excluded.customer_email),
            customer_locale = coalesce(p.customer_locale, excluded.customer_locale),
            tenant_ref      = coalesce(p.tenant_ref, excluded.tenant_ref),
            product_ref     = coalesce(p.product_ref, excluded.product_ref),
            product_kind    = coalesce(p.product_kind, excluded.product_kind),
            metadata        = excluded.metadata || p.metadata,
            updated_at      = now()
        RETURNING {qualified_columns("p")}, (xmax = 0) AS created
        """,
        fields["provider"],
        fields["provider_payment_id"],
        fields["amount_minor"],
        fields["currency"],
        fields.get("customer_email"),
        fields.get("customer_locale"),
        fields.get("tenant_ref"),
        fields.get("product_ref"),
        fields.get("product_kind"),
        fields.get("metadata") or {},
        fields["provider_at"],
    )
    return payment_from(row), bool(row["created"])


async def set_status(
    conn: asyncpg.Connection, payment_id: int, status: str, provider_at: datetime
) -> Payment | None:
    """Set the status; the payment as it now is (None if the row is gone)."""
    row = await conn.fetchrow(
        f"""
        UPDATE payments SET status = $2, status_at = $3, updated_at = now(),
            approved_at = CASE WHEN $2 = 'approved' AND approved_at IS NULL THEN now()
                               ELSE approved_at END
        WHERE id = $1
        RETURNING {_COLUMNS}
        """,
        payment_id,
        status,
        provider_at,
    )
    return _payment(row) if row else None


async def events(conn: asyncpg.Connection, payment_id: int) -> list[PaymentEvent]:
    rows = await conn.fetch(
        "SELECT source, status, provider_at, applied, reason, recorded_at FROM payment_events "
        "WHERE payment_id = $1 ORDER BY id",
        payment_id,
    )
    return [PaymentEvent(**dict(row)) for row in rows]


async def recent(
    conn: asyncpg.Connection, *, limit: int = 50, status: str | None = None
) -> list[Payment]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM payments WHERE ($2::text IS NULL OR status = $2) "
        "ORDER BY created_at DESC LIMIT $1",
        limit,
        status,
    )
    return [_payment(row) for row in rows]
