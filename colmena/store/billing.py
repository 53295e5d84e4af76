"""Tenants' Stripe customers (migration 0014): created once, then named by every checkout and
portal session of the tenant. And the customer portal configuration (migration 0016): made once
per feature set, then named by every portal session."""

from __future__ import annotations

import asyncpg


async def customer_of(conn: asyncpg.Connection, tenant_id: str) -> str | None:
    customer: str | None = await conn.fetchval(
        "SELECT customer_id FROM billing_customers WHERE tenant_id = $1", tenant_id
    )
    return customer


async def remember_customer(conn: asyncpg.Connection, tenant_id: str, customer_id: str) -> str:
    """Store the tenant's customer unless one is stored already; returns the stored one, so two
    first checkouts at once agree on a single customer."""
    stored: str = await conn.fetchval(
        """
        WITH added AS (
            INSERT INTO billing_customers (tenant_id, customer_id) VALUES ($1, $2)
            ON CONFLICT (tenant_id) DO NOTHING RETURNING customer_id
        )
        SELECT customer_id FROM added
        UNION ALL SELECT customer_id FROM billing_customers WHERE tenant_id = $1
        LIMIT 1
        """,
        tenant_id,
        customer_id,
    )
    return stored


async def portal_configuration(conn: asyncpg.Connection, features: str) -> str | None:
    found: str | None = await conn.fetchval(
        "SELECT configuration_id FROM billing_portal_configurations WHERE features = $1", features
    )
    return found


async def remember_portal_configuration(
    conn: asyncpg.Connection, features: str, configuration_id: str
) -> None:
    """Keep the configuration made for `features`, replacing one Stripe no longer knows (another
    Stripe account, say)."""
    await conn.execute(
        """
        INSERT INTO billing_portal_configurations (features, configuration_id) VALUES ($1, $2)
        ON CONFLICT (features) DO UPDATE SET configuration_id = excluded.configuration_id,
                                             created_at = now()
        """,
        features,
        configuration_id,
    )
