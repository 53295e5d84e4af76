"""Queries on tenants' provider keys: sealed on their way in, Fernet-encrypted at rest.

Nothing here sees a key in plain text. The ingress stores a key sealed to the supervisor as a
pending row, with the outbox message that asks a bots worker to take it in, in one transaction;
the worker re-encrypts it into `provider_keys` and deletes the pending row in another. Whatever
changes a tenant's stored keys (taking one in, deleting one) records, in its own transaction,
the message that has a bots worker rewrite the running bot's keys file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from colmena.store import outbox
from colmena.store.outbox import OutboxMessage

ACCEPT_ACTOR = "accept_key"
DELIVER_ACTOR = "deliver_keys"


@dataclass(frozen=True)
class KeyView:
    """What a tenant may see of a key: the provider and its last four characters."""

    provider: str
    last4: str
    updated_at: datetime


@dataclass(frozen=True)
class PendingKey:
    tenant_id: str
    provider: str
    sealed: str
    last4: str


# Pending (sealed) keys -------------------------------------------------------------------------


async def put_pending(
    conn: asyncpg.Connection, tenant_id: str, provider: str, *, sealed: str, last4: str
) -> OutboxMessage | None:
    """Store a sealed key (replacing one still pending) and, in the caller's transaction, the
    message that has a bots worker accept it. Call inside a transaction."""
    await conn.execute(
        """
        INSERT INTO pending_provider_keys (tenant_id, provider, sealed, last4)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (tenant_id, provider) DO UPDATE
        SET sealed = excluded.sealed, last4 = excluded.last4, created_at = now()
        """,
        tenant_id,
        provider,
        sealed,
        last4,
    )
    return await outbox.record(conn, queue="bots", actor=ACCEPT_ACTOR, args=[tenant_id, provider])


async def lock_pending(
    conn: asyncpg.Connection, tenant_id: str, provider: str
) -> PendingKey | None:
    """The tenant's pending key for `provider`, locked until the caller's transaction ends."""
    row = await conn.fetchrow(
        "SELECT tenant_id, provider, sealed, last4 FROM pending_provider_keys "
        "WHERE tenant_id = $1 AND provider = $2 FOR UPDATE",
        tenant_id,
        provider,
    )
    return PendingKey(**dict(row)) if row else None


async def delete_pending(conn: asyncpg.Connection, tenant_id: str, provider: str) -> None:
    await conn.execute(
        "DELETE FROM pending_provider_keys WHERE tenant_id = $1 AND provider = $2",
        tenant_id,
        provider,
    )


async def record_delivery(conn: asyncpg.Connection, tenant_id: str) -> OutboxMessage | None:
    """The message that has a bots worker give the tenant's running bot its current keys; call
    in the transaction that changed them, so a change committed is a change delivered."""
    return await outbox.record(conn, queue="bots", actor=DELIVER_ACTOR, args=[tenant_id])


# Keys at rest ----------------------------------------------------------------------------------


async def put_key(
    conn: asyncpg.Connection,
    tenant_id: str,
    provider: str,
    *,
    ciphertext: str,
    last4: str,
    key_version: str,
) -> None:
    await conn.execute(
        """
        INSERT INTO provider_keys (tenant_id, provider, ciphertext, last4, key_version)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (tenant_id, provider) DO UPDATE
        SET ciphertext = excluded.ciphertext, last4 = excluded.last4,
            key_version = excluded.key_version, updated_at = now()
        """,
        tenant_id,
        provider,
        ciphertext,
        last4,
        key_version,
    )


async def list_keys(conn: asyncpg.Connection, tenant_id: str) -> list[KeyView]:
    """Every provider with a key, a pending one shown over the one it is about to replace."""
    rows = await conn.fetch(
        """
        SELECT DISTINCT ON (provider) provider, last4, updated_at FROM (
            SELECT provider, last4, created_at AS updated_at, 0 AS newer
            FROM pending_provider_keys WHERE tenant_id = $1
            UNION ALL
            SELECT provider, last4, updated_at, 1 FROM provider_keys WHERE tenant_id = $1
        ) AS k
        ORDER BY provider, newer
        """,
        tenant_id,
    )
    return [KeyView(**dict(row)) for row in rows]


async def delete_key(
    conn: asyncpg.Connection, tenant_id: str, provider: str
) -> tuple[bool, OutboxMessage | None]:
    """Delete the tenant's key for `provider`, pending or stored: (whether it had one, the
    message that takes a stored key out of the running bot's keys file, to publish after this
    returns). A key only pending never reached the bot, so it needs no message.

    Pending first, as its own statement: if a bots worker is taking that key in right now, the
    first DELETE waits for it, and the second, with a snapshot taken after it committed, then
    sees (and deletes) the key it stored. One statement would miss that key and keep it.
    """
    async with conn.transaction():
        pending = await conn.execute(
            "DELETE FROM pending_provider_keys WHERE tenant_id = $1 AND provider = $2",
            tenant_id,
            provider,
        )
        stored = await conn.execute(
            "DELETE FROM provider_keys WHERE tenant_id = $1 AND provider = $2", tenant_id, provider
        )
        delivery = await record_delivery(conn, tenant_id) if stored != "DELETE 0" else None
    return pending != "DELETE 0" or stored != "DELETE 0", delivery


async def key_ciphertexts(conn: asyncpg.Connection, tenant_id: str) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT provider, ciphertext FROM provider_keys WHERE tenant_id = $1", tenant_id
    )
    return {row["provider"]: row["ciphertext"] for row in rows}


async def lock_all_keys(conn: asyncpg.Connection) -> list[tuple[int, str]]:
    """Every stored key (id, ciphertext), locked until the caller's transaction ends."""
    rows = await conn.fetch("SELECT id, ciphertext FROM provider_keys ORDER BY id FOR UPDATE")
    return [(row["id"], row["ciphertext"]) for row in rows]


async def replace_ciphertext(
    conn: asyncpg.Connection, key_id: int, ciphertext: str, key_version: str
) -> None:
    await conn.execute(
        "UPDATE provider_keys SET ciphertext = $2, key_version = $3, updated_at = now() "
        "WHERE id = $1",
        key_id,
        ciphertext,
        key_version,
    )
