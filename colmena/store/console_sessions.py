"""Console sessions: opened at login, looked up on every console request, ended at logout.

Rows are keyed by the SHA-256 of the cookie's value (the value itself is never stored). The
lookup also says whether what the session was opened with still holds: the admin is not
disabled, the admin token is still the way in (no active admin account exists), the tenant
token is still the tenant's (a rotation ends its sessions), the account still belongs to the
tenant. Times come from the caller's clock, so the timeout rules
(`colmena.domain.console_sessions`) are decided and tested against one clock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from colmena.domain.console_sessions import SessionTimes

Kind = Literal["admin", "tenant"]


@dataclass(frozen=True)
class StoredSession:
    kind: Kind
    admin_name: str | None
    tenant_id: str | None
    account_id: uuid.UUID | None
    csrf_token: str
    times: SessionTimes
    # False when the admin was disabled, the token rotated or the account left the tenant.
    still_valid: bool


async def open_session(
    conn: asyncpg.Connection,
    digest: bytes,
    *,
    kind: Kind,
    csrf_token: str,
    times: SessionTimes,
    admin_name: str | None = None,
    tenant_id: str | None = None,
    account_id: uuid.UUID | None = None,
    credential_sha256: bytes | None = None,
) -> None:
    await conn.execute(
        """
        INSERT INTO console_sessions (id, kind, admin_name, tenant_id, account_id,
                                      credential_sha256, csrf_token, created_at, last_seen_at,
                                      expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        """,
        digest,
        kind,
        admin_name,
        tenant_id,
        account_id,
        credential_sha256,
        csrf_token,
        times.created_at,
        times.last_seen_at,
        times.expires_at,
    )


async def find_session(conn: asyncpg.Connection, digest: bytes) -> StoredSession | None:
    row = await conn.fetchrow(
        """
        SELECT s.kind, s.admin_name, s.tenant_id, s.account_id, s.csrf_token, s.created_at,
               s.last_seen_at, s.expires_at,
               CASE
                 WHEN s.kind = 'admin' AND s.admin_name IS NULL THEN
                   NOT EXISTS (SELECT 1 FROM console_admins WHERE disabled_at IS NULL)
                 WHEN s.kind = 'admin' THEN COALESCE(a.disabled_at IS NULL, false)
                 WHEN s.account_id IS NOT NULL THEN
                   COALESCE(ac.tenant_id = s.tenant_id, false)
                 ELSE COALESCE(t.token_sha256 = s.credential_sha256, false)
               END AS still_valid
        FROM console_sessions s
        LEFT JOIN console_admins a ON a.name = s.admin_name
        LEFT JOIN accounts ac ON ac.id = s.account_id
        LEFT JOIN tenants t ON t.id = s.tenant_id
        WHERE s.id = $1
        """,
        digest,
    )
    if row is None:
        return None
    return StoredSession(
        kind=row["kind"],
        admin_name=row["admin_name"],
        tenant_id=row["tenant_id"],
        account_id=row["account_id"],
        csrf_token=row["csrf_token"],
        times=SessionTimes(row["created_at"], row["last_seen_at"], row["expires_at"]),
        still_valid=row["still_valid"],
    )


async def touch(conn: asyncpg.Connection, digest: bytes, now: datetime) -> None:
    await conn.execute("UPDATE console_sessions SET last_seen_at = $2 WHERE id = $1", digest, now)


async def end_session(conn: asyncpg.Connection, digest: bytes) -> bool:
    return await conn.execute("DELETE FROM console_sessions WHERE id = $1", digest) == "DELETE 1"


async def delete_stale(conn: asyncpg.Connection, *, now: datetime, seen_before: datetime) -> int:
    """Remove sessions past their absolute expiry or unseen since `seen_before` (idle)."""
    status = await conn.execute(
        "DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen_at < $2",
        now,
        seen_before,
    )
    return int(status.split()[-1])


async def accounts_can_sign_in(conn: asyncpg.Connection) -> bool:
    """Whether some self-service account has a tenant: the login page then offers its form."""
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT 1 FROM accounts WHERE tenant_id IS NOT NULL)")
    )
