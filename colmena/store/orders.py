"""Orders: stored before any provider is called, settled by the payment that names them.

An order is written `pending_provider` first, so a provider that fails or a process that dies
mid-call leaves a row a retry of the same Idempotency-Key finds and completes. A settled
payment finds its order by the order id colmena put in the provider's metadata (the only value
it puts there, and the only one it trusts back); the amount and currency paid must equal the
order's, or the order is held for review and nothing follows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from colmena.domain.checkout import FOLLOW_UP_KEYS, OrderDraft, follow_up_fields, settlement
from colmena.domain.money import exponent
from colmena.store import payments
from colmena.store.payments import Payment

_COLUMNS = (
    "id, product_ref, price_id, edition, seats, quantity, currency, amount, buyer_email, "
    "buyer_locale, provider, installments, fiscal, tenant_ref, status, status_reason, "
    "provider_ref, redirect_url, payment_id, idempotency_key, request_sha256, created_at, "
    "updated_at"
)
# Where each provider's interpretation leaves the order id colmena sent: Stripe's metadata,
# Mercado Pago's external_reference, Bitso's external_ref.
ORDER_ID_KEYS = ("order_id", "external_reference", "external_ref")


@dataclass(frozen=True)
class Order(OrderDraft):
    """An order row: the draft it was made from, and what became of it."""

    id: uuid.UUID
    status: str
    status_reason: str | None
    provider_ref: str | None
    redirect_url: str | None
    payment_id: int | None
    idempotency_key: str | None
    request_sha256: bytes | None
    created_at: datetime
    updated_at: datetime


def _order(row: asyncpg.Record) -> Order:
    """The row, its amount at the currency's exponent (1500.00 MXN, not numeric(18,4)'s)."""
    values = dict(row)
    places = Decimal(1).scaleb(-exponent(values["currency"]))
    return Order(**{**values, "amount": values["amount"].quantize(places)})


async def create(
    conn: asyncpg.Connection,
    draft: OrderDraft,
    *,
    idempotency_key: str | None,
    request_sha256: bytes,
) -> tuple[Order, bool]:
    """Store a new `pending_provider` order, or return the one this idempotency key already
    made (created is then False; the caller compares request_sha256)."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO orders (id, product_ref, price_id, edition, seats, quantity, currency, amount,
            buyer_email, buyer_locale, provider, installments, fiscal, tenant_ref,
            idempotency_key, request_sha256)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING {_COLUMNS}
        """,
        uuid.uuid4(),
        draft.product_ref,
        draft.price_id,
        draft.edition,
        draft.seats,
        draft.quantity,
        draft.currency,
        draft.amount,
        draft.buyer_email,
        draft.buyer_locale,
        draft.provider,
        draft.installments,
        draft.fiscal,
        draft.tenant_ref,
        idempotency_key,
        request_sha256,
    )
    if row is not None:
        return _order(row), True
    existing = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM orders WHERE idempotency_key = $1", idempotency_key
    )
    if existing is None:  # the conflicting row vanished: only a manual DELETE gets here
        raise RuntimeError(f"order for idempotency key {idempotency_key!r} vanished")
    return _order(existing), False


async def get(conn: asyncpg.Connection, order_id: uuid.UUID) -> Order | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM orders WHERE id = $1", order_id)
    return _order(row) if row else None


async def count(conn: asyncpg.Connection) -> int:
    """How many orders exist (what the bad-input checks compare)."""
    return int(await conn.fetchval("SELECT count(*) FROM orders"))


async def mark_open(
    conn: asyncpg.Connection, order_id: uuid.UUID, *, provider_ref: str, redirect_url: str
) -> Order:
    """The provider made its session: the buyer goes to `redirect_url`. The first session
    recorded stays (two racing retries of one key answer the same one), and only a pending
    order turns `open`: one a webhook already settled keeps its state."""
    row = await conn.fetchrow(
        f"""
        UPDATE orders SET
            status = CASE WHEN status = 'pending_provider' THEN 'open' ELSE status END,
            provider_ref = $2, redirect_url = $3, updated_at = now()
        WHERE id = $1 AND provider_ref IS NULL
        RETURNING {_COLUMNS}
        """,
        order_id,
        provider_ref,
        redirect_url,
    )
    order = _order(row) if row else await get(conn, order_id)
    if order is None:
        raise LookupError(f"order {order_id} does not exist")
    return order


def named_order(metadata: dict[str, Any]) -> uuid.UUID | None:
    for key in ORDER_ID_KEYS:
        try:
            return uuid.UUID(str(metadata[key]))
        except (KeyError, ValueError):
            continue
    return None


async def settle_payment(conn: asyncpg.Connection, payment: Payment) -> tuple[Payment, bool]:
    """Link a payment whose status was just applied to the order its metadata names, in the
    caller's transaction; returns (the payment as the follow-ups must read it, whether they
    may run).

    A payment naming no order of its provider is left alone (True: today's follow-ups). One
    that names an order takes the order's product, edition, seats, email and fiscal data, never
    the provider's echo. An approval settles the order as `paid` only when the amount and
    currency equal the order's; otherwise the order is `held` with the reason and nothing
    follows. A rejection or cancellation marks an unpaid order `failed`.
    """
    order_id = named_order(payment.metadata)
    if order_id is None:
        return payment, True
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM orders WHERE id = $1 AND provider = $2 FOR UPDATE",
        order_id,
        payment.provider,
    )
    if row is None:
        return payment, True
    order = _order(row)
    product = await conn.fetchrow(
        "SELECT kind, plan FROM products WHERE ref = $1", order.product_ref
    )
    fields = follow_up_fields(order, kind=product["kind"], plan=product["plan"])
    await conn.execute(
        """
        UPDATE payments SET order_id = $2, customer_email = $3, customer_locale = $4,
            tenant_ref = $5, product_ref = $6, product_kind = $7,
            metadata = (metadata - $9::text[]) || $8::jsonb, updated_at = now()
        WHERE id = $1
        """,
        payment.id,
        order.id,
        fields.customer_email,
        fields.customer_locale,
        fields.tenant_ref,
        fields.product_ref,
        fields.product_kind,
        fields.metadata,
        list(FOLLOW_UP_KEYS),
    )
    linked = await payments.get(conn, payment.id)
    if linked is None:  # locked by the caller's transaction: only a bug gets here
        raise RuntimeError(f"payment {payment.id} vanished while locked")
    decision = settlement(order, payment.id, payment.status, payment.amount_minor, payment.currency)
    if decision.status is not None:
        await conn.execute(
            """
            UPDATE orders SET status = $2, status_reason = $3, updated_at = now(),
                payment_id = CASE WHEN $2 IN ('paid', 'held') THEN $4 ELSE payment_id END
            WHERE id = $1
            """,
            order.id,
            decision.status,
            decision.reason,
            payment.id,
        )
    return linked, decision.fulfil


async def expire_unpaid(conn: asyncpg.Connection, *, older_than_s: float) -> int:
    """Mark orders still waiting (pending_provider, open) after `older_than_s` expired; how
    many. Only a label for people and pages: a payment that arrives later still settles the
    order (`settle_payment` looks at amounts, not at this status)."""
    return int(
        await conn.fetchval(
            "WITH gone AS (UPDATE orders SET status = 'expired', updated_at = now(), "
            "status_reason = 'not paid in time' "
            "WHERE status IN ('pending_provider', 'open') "
            "AND created_at < now() - make_interval(secs => $1) RETURNING 1) "
            "SELECT count(*) FROM gone",
            older_than_s,
        )
    )
