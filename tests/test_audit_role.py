"""The runtime role of `colmena db grant-runtime`: colmena's work goes on as that role, the
audit trail grows through the triggers, and the role can neither change nor delete a row of
it, nor switch its triggers off."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from colmena.actors.payments import settle
from colmena.domain.payment_events import interpret_stripe
from colmena.gateways import sample_events as events
from colmena.store import audit, inbox
from colmena.store.pool import connect, create_pool
from tests.licenses_support import run_cli
from tests.payments_support import LICENSE_METADATA


def _as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


@pytest.fixture
async def runtime_role(db: asyncpg.Connection) -> AsyncIterator[str]:
    """A login role of this test's own, gone afterwards with every privilege it was given."""
    role = f"colmena_rt_{uuid.uuid4().hex[:10]}"
    await db.execute(f"CREATE ROLE {role} LOGIN")
    yield role
    await db.execute(f"DROP OWNED BY {role}")
    await db.execute(f"DROP ROLE {role}")


async def test_the_runtime_role_works_and_can_only_append_to_the_trail(
    db, settings, runtime_role
) -> None:
    granted = await run_cli(settings, ["db", "grant-runtime", runtime_role])
    assert granted.exit_code == 0, granted.output
    assert "audit_events: INSERT, SELECT" in granted.output
    assert "audit_seals: INSERT, SELECT" in granted.output

    url = _as_role(settings.require_database_url(), runtime_role)
    event = events.stripe_event(
        "payment_intent.succeeded", events.payment_intent(metadata=LICENSE_METADATA)
    )
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_user") == runtime_role
            inbox_id, _ = await inbox.record_event(
                conn, provider="stripe", event_key=event["id"], kind=event["type"], payload=event
            )
        follow_ups = await settle(pool, inbox_id, lambda stored: interpret_stripe(stored.payload))
        assert follow_ups, "the settle recorded its follow-ups"
    finally:
        await pool.close()
    assert await db.fetchval("SELECT status FROM payments") == "approved"
    actors = {row["actor"] for row in await db.fetch("SELECT actor FROM audit_events")}
    assert actors == {f"db:{runtime_role}"}

    conn = await connect(url)
    try:
        assert await audit.seal(conn) == 2
        assert (await audit.verify_chain(conn)).ok
        for statement in (
            "UPDATE audit_events SET actor = 'someone'",
            "DELETE FROM audit_events",
            "TRUNCATE audit_events",
            "UPDATE audit_seals SET seq = seq + 100",
            "DELETE FROM audit_seals",
            "TRUNCATE audit_seals",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await conn.execute(statement)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="must be owner"):
            await conn.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await conn.execute("DELETE FROM colmena_migrations")
        # Ordinary tables stay fully writable.
        assert await conn.execute("UPDATE payments SET status = 'refunded'") == "UPDATE 1"
    finally:
        await conn.close()
    assert await db.fetchval("SELECT count(*) FROM audit_events") == 3


async def test_tables_of_later_migrations_follow_the_grant(db, settings, runtime_role) -> None:
    assert (await run_cli(settings, ["db", "grant-runtime", runtime_role])).exit_code == 0
    await db.execute("CREATE TABLE later_feature (id bigserial PRIMARY KEY, note text)")
    conn = await connect(_as_role(settings.require_database_url(), runtime_role))
    try:
        await conn.execute("INSERT INTO later_feature (note) VALUES ('x')")
        assert await conn.execute("DELETE FROM later_feature") == "DELETE 1"
    finally:
        await conn.close()


async def test_grant_runtime_refuses_roles_it_cannot_limit(db, settings) -> None:
    missing = await run_cli(settings, ["db", "grant-runtime", "no_such_role_here"])
    assert missing.exit_code == 1
    assert "no database role 'no_such_role_here'" in missing.output
    owner = await run_cli(settings, ["db", "grant-runtime", "postgres"])
    assert owner.exit_code == 1
    assert "superuser" in owner.output
