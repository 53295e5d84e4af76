"""asyncpg pools with JSON codecs, so query modules pass dicts and lists, not strings.

Every connection is a writable session. The URL may list a primary and its standbys; asyncpg
tries them in order and keeps the first that takes writes (`target_session_attrs`, read-write
unless the URL says primary: see `colmena.config.database_url`). After a failover the dead
node's connections break, asyncpg drops them, and the pool's next connection finds the promoted
node the same way. A pooled connection whose server turns read-only under it (an operator
fencing the old primary with `default_transaction_read_only`) is closed when released, so the
pool cannot keep sending writes to a node that refuses them.

Every connection counts the statements it sends (`colmena_db_statements_total`, through
`execute`, `executemany` and the `fetch` methods; a report's cursor is not counted): round trips
per payment are what the throughput work is judged by, and a sudden rise in production is an
N+1 query found before it costs.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import asyncpg

from colmena.config.database_url import parse_database_url
from colmena.config.metrics import DB_STATEMENTS


class CountingConnection(asyncpg.Connection):
    """A connection that counts each statement it sends through its query methods (a
    transaction's BEGIN and COMMIT go through `execute`). asyncpg's own query logger would count
    them too, but it times each query in a context manager and schedules a callback per query,
    which cost more client CPU than a short statement's round trip itself."""

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        DB_STATEMENTS.inc()
        return cast(str, await super().execute(query, *args, timeout=timeout))

    async def executemany(self, command: str, args: Any, *, timeout: float | None = None) -> None:
        DB_STATEMENTS.inc()
        await super().executemany(command, args, timeout=timeout)

    async def fetch(self, query: str, *args: Any, **options: Any) -> list[asyncpg.Record]:
        DB_STATEMENTS.inc()
        return cast(list[asyncpg.Record], await super().fetch(query, *args, **options))

    async def fetchrow(self, query: str, *args: Any, **options: Any) -> asyncpg.Record | None:
        DB_STATEMENTS.inc()
        return cast(asyncpg.Record | None, await super().fetchrow(query, *args, **options))

    async def fetchval(self, query: str, *args: Any, **options: Any) -> Any:
        DB_STATEMENTS.inc()
        return await super().fetchval(query, *args, **options)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


def _read_only(conn: asyncpg.Connection) -> bool:
    """Whether the server now says it refuses writes. Both settings are reported by the server
    whenever they change (PostgreSQL 14+), so asking costs no round trip."""
    settings = conn.get_settings()
    return "on" in (
        getattr(settings, "in_hot_standby", "off"),
        getattr(settings, "default_transaction_read_only", "off"),
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's default `RESET ALL; UNLISTEN *; ...` round trip, and drop a
    connection to a server that turned read-only (the pool then connects afresh, to the
    writable node).

    asyncpg still rolls back any open transaction on release; colmena sets no session state on
    pooled connections (advisory locks are always unlocked in `finally`), so the reset query is a
    wasted round trip on every request.
    """
    if _read_only(conn):
        conn.terminate()


def _writable_session(database_url: str) -> str:
    return parse_database_url(database_url).session_attrs


async def create_pool(
    database_url: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any
) -> asyncpg.Pool:
    """A pool of writable connections that encode json/jsonb both ways."""
    return await asyncpg.create_pool(
        database_url,
        target_session_attrs=_writable_session(database_url),
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        connection_class=CountingConnection,
        **kwargs,
    )


async def connect(database_url: str, **kwargs: Any) -> asyncpg.Connection:
    """One writable connection with the same codecs, for CLI commands and migrations."""
    conn = await asyncpg.connect(
        database_url,
        target_session_attrs=_writable_session(database_url),
        connection_class=CountingConnection,
        **kwargs,
    )
    await _init_connection(conn)
    return conn


STANDBY = "is a standby"


async def _role(database_url: str, where: dict[str, Any], timeout: float) -> str:
    try:
        conn = await asyncpg.connect(
            database_url, target_session_attrs="any", timeout=timeout, **where
        )
    except (TimeoutError, OSError) as exc:
        return f"cannot be reached ({str(exc) or type(exc).__name__})"
    except asyncpg.PostgresError as exc:
        return f"refused the connection ({exc})"
    try:
        if await conn.fetchval("SELECT pg_is_in_recovery()"):
            return STANDBY
        return "is read-only" if _read_only(conn) else "is writable"
    finally:
        await conn.close()


async def node_roles(database_url: str, *, timeout: float) -> list[tuple[str, str]]:
    """(host, predicate) for each host of the URL as it is now; the predicate is "is writable",
    "is a standby", "is read-only", "cannot be reached (why)" or "refused the connection (why)".
    For the start-up message when no host gives a writable session."""
    target = parse_database_url(database_url)
    if not target.hosts:
        return [(target.describe_hosts(), await _role(database_url, {}, timeout))]
    roles = await asyncio.gather(
        *(
            _role(database_url, {"host": host.name, "port": host.port}, timeout)
            for host in target.hosts
        )
    )
    return [(str(host), role) for host, role in zip(target.hosts, roles, strict=True)]
