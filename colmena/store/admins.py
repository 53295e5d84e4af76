"""Console operator accounts: a name and an argon2id hash (never a password), and whether any
is active (without one the console takes COLMENA_BOT_ADMIN_TOKEN instead)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class Admin:
    name: str
    password_hash: str
    created_at: datetime
    disabled_at: datetime | None


_ADMIN = "name, password_hash, created_at, disabled_at"


async def create_admin(conn: asyncpg.Connection, *, name: str, password_hash: str) -> bool:
    """False when the name is taken (disabled admins keep theirs: audit rows name them)."""
    status = await conn.execute(
        "INSERT INTO console_admins (name, password_hash) VALUES ($1, $2) "
        "ON CONFLICT (name) DO NOTHING",
        name,
        password_hash,
    )
    return status == "INSERT 0 1"


async def get_admin(conn: asyncpg.Connection, name: str) -> Admin | None:
    row = await conn.fetchrow(f"SELECT {_ADMIN} FROM console_admins WHERE name = $1", name)
    return Admin(**dict(row)) if row else None


async def list_admins(conn: asyncpg.Connection) -> list[Admin]:
    rows = await conn.fetch(f"SELECT {_ADMIN} FROM console_admins ORDER BY name")
    return [Admin(**dict(row)) for row in rows]


async def any_active(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM console_admins WHERE disabled_at IS NULL)"
        )
    )


async def set_password(conn: asyncpg.Connection, name: str, password_hash: str) -> None:
    await conn.execute(
        "UPDATE console_admins SET password_hash = $2 WHERE name = $1", name, password_hash
    )


async def disable_admin(conn: asyncpg.Connection, name: str) -> bool:
    """Disable `name` and end its sessions; False when there is no such active admin."""
    async with conn.transaction():
        status = await conn.execute(
            "UPDATE console_admins SET disabled_at = now() WHERE name = $1 AND disabled_at IS NULL",
            name,
        )
        if status != "UPDATE 1":
            return False
        await conn.execute("DELETE FROM console_sessions WHERE admin_name = $1", name)
    return True
