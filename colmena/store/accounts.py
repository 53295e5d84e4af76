"""Queries on self-service accounts, their emailed links and their sessions' tokens.

Tokens arrive here already hashed (SHA-256); nothing in this module sees a secret in plain text
or a password (only its argon2id hash). Times are the database's: expiry is decided against
`now()` of the same server for every ingress.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from colmena.domain.accounts import LinkPurpose, StoredToken, TokenKind
from colmena.store.tenants import Tenant

_ACCOUNT = "a.id, a.email, a.password_hash, a.verified_at, a.tenant_id"


@dataclass(frozen=True)
class Account:
    id: uuid.UUID
    email: str
    password_hash: str
    verified_at: datetime | None
    tenant_id: str | None


@dataclass(frozen=True)
class Link:
    account: Account
    expires_at: datetime
    used_at: datetime | None
    now: datetime


@dataclass(frozen=True)
class SessionToken:
    token: StoredToken
    session_id: uuid.UUID
    account_id: uuid.UUID
    now: datetime


def _account(row: asyncpg.Record) -> Account:
    return Account(
        id=row["id"],
        email=row["email"],
        password_hash=row["password_hash"],
        verified_at=row["verified_at"],
        tenant_id=row["tenant_id"],
    )


# Accounts ------------------------------------------------------------------------------------


async def account_by_email(
    conn: asyncpg.Connection, email: str, *, for_update: bool = False
) -> Account | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_ACCOUNT} FROM accounts a WHERE lower(a.email) = lower($1){lock}", email
    )
    return _account(row) if row else None


async def create_account(
    conn: asyncpg.Connection, email: str, password_hash: str
) -> Account | None:
    """The new, unverified account; None when the address (in any case) is taken."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO accounts AS a (id, email, password_hash) VALUES ($1, $2, $3)
        ON CONFLICT ((lower(email))) DO NOTHING RETURNING {_ACCOUNT}
        """,
        uuid.uuid4(),
        email,
        password_hash,
    )
    return _account(row) if row else None


async def set_password(conn: asyncpg.Connection, account_id: uuid.UUID, password_hash: str) -> None:
    await conn.execute(
        "UPDATE accounts SET password_hash = $2, updated_at = now() WHERE id = $1",
        account_id,
        password_hash,
    )


async def mark_verified(conn: asyncpg.Connection, account_id: uuid.UUID, tenant_id: str) -> None:
    await conn.execute(
        "UPDATE accounts SET verified_at = now(), tenant_id = $2, updated_at = now() WHERE id = $1",
        account_id,
        tenant_id,
    )


# Emailed links -------------------------------------------------------------------------------


async def replace_link(
    conn: asyncpg.Connection,
    account_id: uuid.UUID,
    purpose: LinkPurpose,
    token_sha256: bytes,
    *,
    ttl_s: float,
) -> None:
    """A new link for `purpose`; the account's earlier unused ones of that purpose stop working
    (only the newest email's link counts)."""
    await conn.execute(
        "DELETE FROM account_links WHERE account_id = $1 AND purpose = $2 AND used_at IS NULL",
        account_id,
        purpose,
    )
    await conn.execute(
        """
        INSERT INTO account_links (token_sha256, account_id, purpose, expires_at)
        VALUES ($1, $2, $3, now() + make_interval(secs => $4))
        """,
        token_sha256,
        account_id,
        purpose,
        ttl_s,
    )


async def link_for_update(
    conn: asyncpg.Connection, token_sha256: bytes, purpose: LinkPurpose
) -> Link | None:
    """The link and its account, both locked until the caller's transaction ends."""
    row = await conn.fetchrow(
        f"""
        SELECT {_ACCOUNT}, l.expires_at, l.used_at, now() AS now
        FROM account_links l JOIN accounts a ON a.id = l.account_id
        WHERE l.token_sha256 = $1 AND l.purpose = $2
        FOR UPDATE
        """,
        token_sha256,
        purpose,
    )
    if row is None:
        return None
    return Link(_account(row), row["expires_at"], row["used_at"], row["now"])


async def use_link(conn: asyncpg.Connection, token_sha256: bytes) -> None:
    await conn.execute(
        "UPDATE account_links SET used_at = now() WHERE token_sha256 = $1 AND used_at IS NULL",
        token_sha256,
    )


# Sessions and their tokens -------------------------------------------------------------------


async def open_session(conn: asyncpg.Connection, account_id: uuid.UUID) -> uuid.UUID:
    session_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO account_sessions (id, account_id) VALUES ($1, $2)", session_id, account_id
    )
    return session_id


async def add_token(
    conn: asyncpg.Connection,
    session_id: uuid.UUID,
    kind: TokenKind,
    token_sha256: bytes,
    *,
    ttl_s: float,
) -> None:
    await conn.execute(
        """
        INSERT INTO session_tokens (token_sha256, session_id, kind, expires_at)
        VALUES ($1, $2, $3, now() + make_interval(secs => $4))
        """,
        token_sha256,
        session_id,
        kind,
        ttl_s,
    )


async def token_for_update(conn: asyncpg.Connection, token_sha256: bytes) -> SessionToken | None:
    """The token with its session's state, locked: two refreshes of one token run one after
    the other, so the second sees the first one's use."""
    row = await conn.fetchrow(
        """
        SELECT t.kind, t.expires_at, t.used_at, s.revoked_at IS NOT NULL AS revoked,
               s.id AS session_id, s.account_id, now() AS now
        FROM session_tokens t JOIN account_sessions s ON s.id = t.session_id
        WHERE t.token_sha256 = $1
        FOR UPDATE OF t
        """,
        token_sha256,
    )
    if row is None:
        return None
    stored = StoredToken(row["kind"], row["expires_at"], row["used_at"], row["revoked"])
    return SessionToken(stored, row["session_id"], row["account_id"], row["now"])


async def use_token(conn: asyncpg.Connection, token_sha256: bytes) -> None:
    await conn.execute(
        "UPDATE session_tokens SET used_at = now() WHERE token_sha256 = $1", token_sha256
    )


async def revoke_session(conn: asyncpg.Connection, session_id: uuid.UUID, reason: str) -> bool:
    """True when this call revoked it (it was live)."""
    done = await conn.execute(
        "UPDATE account_sessions SET revoked_at = now(), revoked_reason = $2 "
        "WHERE id = $1 AND revoked_at IS NULL",
        session_id,
        reason,
    )
    return done == "UPDATE 1"


async def revoke_sessions(conn: asyncpg.Connection, account_id: uuid.UUID, reason: str) -> int:
    """Every live session of the account; how many there were."""
    done = await conn.execute(
        "UPDATE account_sessions SET revoked_at = now(), revoked_reason = $2 "
        "WHERE account_id = $1 AND revoked_at IS NULL",
        account_id,
        reason,
    )
    return int(done.rsplit(" ", 1)[1])


async def tenant_by_access_token(
    conn: asyncpg.Connection, token_sha256: bytes
) -> tuple[Tenant, bytes] | None:
    """The tenant an unexpired access token of a live session speaks for, with the stored
    digest for a constant-time check; None once the session is revoked or the tenant gone."""
    row = await conn.fetchrow(
        """
        SELECT te.id, te.email, te.plan, te.plan_source, te.plan_provider_at, te.created_at,
               t.token_sha256
        FROM session_tokens t
        JOIN account_sessions s ON s.id = t.session_id
        JOIN accounts a ON a.id = s.account_id
        JOIN tenants te ON te.id = a.tenant_id
        WHERE t.token_sha256 = $1 AND t.kind = 'access' AND t.expires_at > now()
          AND s.revoked_at IS NULL
        """,
        token_sha256,
    )
    if row is None:
        return None
    fields = dict(row)
    stored = fields.pop("token_sha256")
    return Tenant(**fields), bytes(stored)


async def delete_expired(conn: asyncpg.Connection, *, older_than_s: float) -> dict[str, int]:
    """Remove emailed links and session tokens expired for longer than `older_than_s`, and the
    sessions left with no token; how many of each. An expired token is refused whether its row
    is there or not, so nothing a client holds changes meaning."""
    async with conn.transaction():
        links = await conn.fetchval(
            "WITH gone AS (DELETE FROM account_links "
            "WHERE expires_at < now() - make_interval(secs => $1) RETURNING 1) "
            "SELECT count(*) FROM gone",
            older_than_s,
        )
        tokens = await conn.fetchval(
            "WITH gone AS (DELETE FROM session_tokens "
            "WHERE expires_at < now() - make_interval(secs => $1) RETURNING 1) "
            "SELECT count(*) FROM gone",
            older_than_s,
        )
        sessions = await conn.fetchval(
            "WITH gone AS (DELETE FROM account_sessions s "
            "WHERE s.created_at < now() - make_interval(secs => $1) "
            "AND NOT EXISTS (SELECT 1 FROM session_tokens t WHERE t.session_id = s.id) "
            "RETURNING 1) SELECT count(*) FROM gone",
            older_than_s,
        )
    return {"links": links, "tokens": tokens, "sessions": sessions}
