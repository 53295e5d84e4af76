"""The runtime database role: what colmena's processes may do, which is less than the owner.

Migrations run as the owner of the schema; ingress, workers and the scheduler connect as a
runtime role that may read and write the ordinary tables but only read and append the audit
trail. Not owning the tables matters as much as the grants: an owner could disable the audit
triggers or grant itself back what was revoked. Default privileges make the tables of later
migrations follow, as long as the owner who runs them is the one who ran the grant.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

APPEND_ONLY_TABLES = ("audit_events", "audit_seals")
# The migrations' own ledger: a runtime process reads it (is the schema current?) only.
READ_ONLY_TABLES = ("colmena_migrations",)


class RoleRefused(Exception):
    """The role cannot be a runtime role (absent, the owner itself, or beyond privileges)."""


@dataclass(frozen=True)
class RuntimeGrant:
    role: str
    owner: str
    tables: int


async def grant_runtime(conn: asyncpg.Connection, role: str) -> RuntimeGrant:
    """Grant `role` what colmena's processes need, in one transaction; run it as the owner."""
    found = await conn.fetchrow(
        "SELECT rolsuper, rolbypassrls, quote_ident(rolname) AS quoted FROM pg_roles"
        " WHERE rolname = $1",
        role,
    )
    if found is None:
        raise RoleRefused(f"no database role {role!r} (CREATE ROLE {role} LOGIN PASSWORD ...)")
    if found["rolsuper"]:
        raise RoleRefused(f"{role} is a superuser: no privilege binds it")
    owner = await conn.fetchval("SELECT current_user")
    if owner == role:
        raise RoleRefused(f"{role} is the role running this command: the owner cannot be limited")
    owned = await conn.fetchval(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = $1", role
    )
    if owned:
        raise RoleRefused(f"{role} owns {owned} of colmena's tables: it could drop the triggers")
    quoted = found["quoted"]
    append_only = ", ".join(APPEND_ONLY_TABLES)
    read_only = ", ".join(READ_ONLY_TABLES)
    async with conn.transaction():
        for statement in (
            f"GRANT USAGE ON SCHEMA public TO {quoted}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}",
            f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {append_only} FROM {quoted}",
            f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {read_only} FROM {quoted}",
            f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {quoted}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public"
            f" GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {quoted}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public"
            f" GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {quoted}",
        ):
            await conn.execute(statement)
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    return RuntimeGrant(role=role, owner=owner, tables=tables)


async def table_privileges(conn: asyncpg.Connection, role: str, table: str) -> list[str]:
    """The privileges `role` holds on `table` (for `grant-runtime` to show what it did)."""
    rows = await conn.fetch(
        "SELECT privilege_type FROM information_schema.role_table_grants"
        " WHERE grantee = $1 AND table_schema = 'public' AND table_name = $2"
        " ORDER BY privilege_type",
        role,
        table,
    )
    return [row["privilege_type"] for row in rows]
