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
    """The payment row, locked for this transaction; created first if unknown (returns created)."""
    inserted = await conn.fetchrow(
        f"""
        INSERT INTO payments (provider, provider_payment_id, amount_minor, currency, customer_email,
            customer_locale, tenant_ref, product_ref, product_kind, metadata, status, status_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'new', $11)
        ON CONFLICT (provider, provider_payment_id) DO NOTHING
        RETURNING {_COLUMNS}
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
    if inserted is not None:
        # A row this transaction inserted is already its own: others' inserts of the same
        # payment wait on it, and nobody else sees it before the commit.
        return _payment(inserted), True
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM payments "
        "WHERE provider = $1 AND provider_payment_id = $2 FOR UPDATE",
        fields["provider"],
        fields["provider_payment_id"],
    )
    return _payment(row), False


async def fill_details(conn: asyncpg.Connection, payment_id: int, fields: dict[str, Any]) -> None:
    """Complete what an earlier, thinner event did not carry (email, product, metadata)."""
    await conn.execute(
        """
        UPDATE payments SET
            customer_email  = coalesce(customer_email, $2),
            customer_locale = coalesce(customer_locale, $3),
            tenant_ref      = coalesce(tenant_ref, $4),
            product_ref     = coalesce(product_ref, $5),
            product_kind    = coalesce(product_kind, $6),
            metadata        = $7::jsonb || metadata,
            updated_at      = now()
        WHERE id = $1
        """,
        payment_id,
        fields.get("customer_email"),
        fields.get("customer_locale"),
        fields.get("tenant_ref"),
        fields.get("product_ref"),
        fields.get("product_kind"),
        fields.get("metadata") or {},
    )


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


async def add_event(
    conn: asyncpg.Connection,
    *,
    payment_id: int,
    inbox_id: int | None,
    source: str,
    status: str,
    provider_at: datetime,
    applied: bool,
    reason: str | None,
) -> None:
    await conn.execute(
        """
        INSERT INTO payment_events
            (payment_id, inbox_id, source, status, provider_at, applied, reason)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        """,
        payment_id,
        inbox_id,
        source,
        status,
        provider_at,
        applied,
        reason,
    )


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
