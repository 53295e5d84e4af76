"""Tenant notifications: endpoints, events, and deliveries with their retries and turns.

Events are written by the transaction that recorded the bot's or plan's change, together with
one delivery per live endpoint (unique per event and endpoint) and the outbox rows that put
them on the `notifications` queue. A delivery is claimed under the tenant's transaction lock
only while the tenant has fewer than its limit in flight; otherwise it is left waiting with no
message on the queue (`dispatched_at` NULL), and the delivery that frees a slot dispatches the
next in the same locked transaction. The sweep re-dispatches what is due and has no message on
the queue: retries whose time came, and anything a lost message or a dead worker left behind.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from colmena.store import outbox
from colmena.store.locks import lock_space
from colmena.store.outbox import OutboxMessage

QUEUE = "notifications"
DELIVER_ACTOR = "deliver_notification"
NOTIFY_LOCK_SPACE = lock_space("NTFY")
MAX_PAGE = 100


@dataclass(frozen=True)
class Endpoint:
    id: uuid.UUID
    tenant_id: str
    kind: str
    target: str
    sealed_secret: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Claimed:
    """A delivery leased to one worker for one attempt, with what it needs to send it."""

    id: uuid.UUID
    tenant_id: str
    channel: str
    attempts: int  # counting this one
    endpoint: Endpoint | None  # None: the endpoint was removed since
    event_id: uuid.UUID
    event_kind: str
    event_data: dict[str, Any]
    occurred_at: datetime


@dataclass(frozen=True)
class Delivery:
    id: uuid.UUID
    tenant_id: str
    event_id: uuid.UUID
    event_kind: str
    channel: str
    status: str
    attempts: int
    replays: int
    next_attempt_at: datetime
    last_error: str | None
    last_status: int | None
    created_at: datetime
    finished_at: datetime | None


_ENDPOINT = "id, tenant_id, kind, target, sealed_secret, created_at, updated_at"
_DELIVERY = (
    "d.id, d.tenant_id, d.event_id, e.kind AS event_kind, d.channel, d.status, d.attempts, "
    "d.replays, d.next_attempt_at, d.last_error, d.last_status, d.created_at, d.finished_at"
)


async def _tenant_lock(conn: asyncpg.Connection, tenant_id: str) -> None:
    """The tenant's notification lock until the caller's transaction ends."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))", NOTIFY_LOCK_SPACE, tenant_id
    )


# Endpoints -----------------------------------------------------------------------------------


async def endpoints(conn: asyncpg.Connection, tenant_id: str) -> list[Endpoint]:
    rows = await conn.fetch(
        f"SELECT {_ENDPOINT} FROM notification_endpoints "
        "WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY kind",
        tenant_id,
    )
    return [Endpoint(**dict(row)) for row in rows]


async def put_endpoint(
    conn: asyncpg.Connection,
    tenant_id: str,
    kind: str,
    target: str,
    *,
    sealed_secret: str | None = None,
) -> Endpoint:
    """Register or change the tenant's endpoint of `kind` in place (deliveries still pending go
    where it points now)."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO notification_endpoints (id, tenant_id, kind, target, sealed_secret)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (tenant_id, kind) WHERE deleted_at IS NULL
        DO UPDATE SET target = EXCLUDED.target, sealed_secret = EXCLUDED.sealed_secret,
                      updated_at = now()
        RETURNING {_ENDPOINT}
        """,
        uuid.uuid4(),
        tenant_id,
        kind,
        target,
        sealed_secret,
    )
    return Endpoint(**dict(row))


async def delete_endpoint(conn: asyncpg.Connection, tenant_id: str, kind: str) -> bool:
    """Remove the endpoint; its deliveries not yet sent die with it (nowhere to send them)."""
    endpoint_id = await conn.fetchval(
        "UPDATE notification_endpoints SET deleted_at = now() "
        "WHERE tenant_id = $1 AND kind = $2 AND deleted_at IS NULL RETURNING id",
        tenant_id,
        kind,
    )
    if endpoint_id is None:
        return False
    await conn.execute(
        "UPDATE notification_deliveries SET status = 'dead', last_error = 'endpoint removed', "
        "finished_at = now(), lease_until = NULL WHERE endpoint_id = $1 AND status = 'pending'",
        endpoint_id,
    )
    return True


# Events --------------------------------------------------------------------------------------


async def _dispatch(
    conn: asyncpg.Connection, delivery_ids: Sequence[uuid.UUID]
) -> list[OutboxMessage]:
    rows = []
    for delivery_id in delivery_ids:
        row = await outbox.record(conn, queue=QUEUE, actor=DELIVER_ACTOR, args=[str(delivery_id)])
        if row is not None:
            rows.append(row)
    return rows


async def record_events(
    conn: asyncpg.Connection, tenant_id: str, events: Sequence[tuple[str, Mapping[str, Any]]]
) -> list[OutboxMessage]:
    """Record (kind, data) events in the caller's transaction, one delivery per live endpoint,
    and the outbox rows that send them; returns those rows (publish them after commit)."""
    rows: list[OutboxMessage] = []
    for kind, data in events:
        delivery_ids = await conn.fetch(
            """
            WITH event AS (
                INSERT INTO tenant_events (id, tenant_id, kind, data) VALUES ($1, $2, $3, $4)
                RETURNING id, tenant_id
            )
            INSERT INTO notification_deliveries (id, event_id, endpoint_id, tenant_id, channel,
                                                 dispatched_at)
            SELECT gen_random_uuid(), event.id, ep.id, event.tenant_id, ep.kind, now()
            FROM event JOIN notification_endpoints ep
              ON ep.tenant_id = event.tenant_id AND ep.deleted_at IS NULL
            ON CONFLICT (event_id, endpoint_id) DO NOTHING
            RETURNING id
            """,
            uuid.uuid4(),
            tenant_id,
            kind,
            dict(data),
        )
        rows += await _dispatch(conn, [row["id"] for row in delivery_ids])
    return rows


# Claiming and finishing ----------------------------------------------------------------------


async def claim(
    conn: asyncpg.Connection, delivery_id: uuid.UUID, *, limit: int, lease_s: float
) -> Claimed | Literal["busy"] | None:
    """Lease a due delivery for one attempt, in the caller's transaction.

    "busy" when the tenant already has `limit` deliveries in flight: the delivery is left
    waiting for its turn with no message on the queue. None when there is nothing to do (sent
    already, dead, not due yet, or leased by another worker).
    """
    tenant_id = await conn.fetchval(
        "SELECT tenant_id FROM notification_deliveries WHERE id = $1", delivery_id
    )
    if tenant_id is None:
        return None
    await _tenant_lock(conn, tenant_id)
    row = await conn.fetchrow(
        """
        SELECT status, next_attempt_at <= now() AS due, lease_until <= now() AS lapsed
        FROM notification_deliveries WHERE id = $1
        """,
        delivery_id,
    )
    claimable = (row["status"] == "pending" and row["due"]) or (
        row["status"] == "in_flight" and row["lapsed"]
    )
    if not claimable:
        return None
    in_flight = await conn.fetchval(
        "SELECT count(*) FROM notification_deliveries "
        "WHERE tenant_id = $1 AND status = 'in_flight' AND lease_until > now()",
        tenant_id,
    )
    if in_flight >= limit:
        await conn.execute(
            "UPDATE notification_deliveries SET dispatched_at = NULL, status = 'pending', "
            "lease_until = NULL WHERE id = $1",
            delivery_id,
        )
        return "busy"
    leased = await conn.fetchrow(
        f"""
        UPDATE notification_deliveries d
        SET status = 'in_flight', attempts = attempts + 1,
            lease_until = now() + make_interval(secs => $2)
        FROM tenant_events ev, notification_endpoints ep
        WHERE d.id = $1 AND ev.id = d.event_id AND ep.id = d.endpoint_id
        RETURNING d.id, d.tenant_id, d.channel, d.attempts, d.event_id,
                  ev.kind AS event_kind, ev.data AS event_data, ev.occurred_at,
                  ep.deleted_at IS NOT NULL AS removed,
                  {", ".join(f"ep.{name} AS ep_{name}" for name in _ENDPOINT.split(", "))}
        """,
        delivery_id,
        lease_s,
    )
    endpoint = Endpoint(**{name: leased[f"ep_{name}"] for name in _ENDPOINT.split(", ")})
    return Claimed(
        id=leased["id"],
        tenant_id=leased["tenant_id"],
        channel=leased["channel"],
        attempts=leased["attempts"],
        endpoint=None if leased["removed"] else endpoint,
        event_id=leased["event_id"],
        event_kind=leased["event_kind"],
        event_data=dict(leased["event_data"]),
        occurred_at=leased["occurred_at"],
    )


Outcome = Literal["delivered", "retry", "dead"]


async def finish(
    conn: asyncpg.Connection,
    claimed: Claimed,
    outcome: Outcome,
    *,
    limit: int,
    retry_in_s: float = 0.0,
    error: str | None = None,
    status: int | None = None,
) -> list[OutboxMessage]:
    """Record one attempt's outcome in the caller's transaction and hand the freed slot to the
    tenant's next due deliveries; returns the outbox rows that send them."""
    await _tenant_lock(conn, claimed.tenant_id)
    await conn.execute(
        """
        UPDATE notification_deliveries
        SET status = CASE $2 WHEN 'retry' THEN 'pending' ELSE $2 END,
            next_attempt_at = CASE $2 WHEN 'retry' THEN now() + make_interval(secs => $3)
                                      ELSE next_attempt_at END,
            finished_at = CASE $2 WHEN 'retry' THEN NULL ELSE now() END,
            lease_until = NULL, last_error = $4, last_status = $5
        WHERE id = $1 AND status = 'in_flight' AND attempts = $6
        """,
        claimed.id,
        outcome,
        retry_in_s,
        error[:500] if error else None,
        status,
        claimed.attempts,
    )
    return await dispatch_due(conn, limit=limit, tenant_id=claimed.tenant_id)


async def dispatch_due(
    conn: asyncpg.Connection,
    *,
    limit: int,
    stale_s: float = 60.0,
    tenant_id: str | None = None,
    batch: int = 500,
) -> list[OutboxMessage]:
    """Put due deliveries with no message on the queue back on it, at most as many per tenant as
    it has free slots; one tenant's or every tenant's. Returns the outbox rows to publish.

    Due: pending and its time came, or leased by a worker that never finished (lease over).
    No message on the queue: never dispatched since it became due (`dispatched_at` before
    `next_attempt_at`, or NULL for one waiting its turn), or dispatched more than `stale_s` ago
    (the message was lost).
    """
    rows = await conn.fetch(
        """
        WITH busy AS (
            SELECT tenant_id, count(*) AS n FROM notification_deliveries
            WHERE status = 'in_flight' AND lease_until > now()
              AND ($3::text IS NULL OR tenant_id = $3)
            GROUP BY tenant_id
        ), due AS (
            SELECT id, tenant_id,
                   row_number() OVER (PARTITION BY tenant_id
                                      ORDER BY next_attempt_at, created_at, id) AS turn
            FROM notification_deliveries
            WHERE ((status = 'pending' AND next_attempt_at <= now())
                   OR (status = 'in_flight' AND lease_until <= now()))
              AND (dispatched_at IS NULL OR dispatched_at < next_attempt_at
                   OR dispatched_at < now() - make_interval(secs => $2))
              AND ($3::text IS NULL OR tenant_id = $3)
        )
        UPDATE notification_deliveries d SET dispatched_at = now()
        FROM due LEFT JOIN busy ON busy.tenant_id = due.tenant_id
        WHERE d.id = due.id AND due.turn <= $1 - coalesce(busy.n, 0)
          AND d.id IN (SELECT id FROM due ORDER BY turn LIMIT $4)
        RETURNING d.id
        """,
        limit,
        stale_s,
        tenant_id,
        batch,
    )
    return await _dispatch(conn, [row["id"] for row in rows])


async def trim(conn: asyncpg.Connection, *, keep_days: int) -> int:
    """Forget events older than `keep_days` whose deliveries are all finished (they go with
    them), and removed endpoints nothing refers to any more; returns how many events went."""
    result = await conn.execute(
        """
        DELETE FROM tenant_events e
        WHERE e.occurred_at < now() - make_interval(days => $1)
          AND NOT EXISTS (SELECT 1 FROM notification_deliveries d
                          WHERE d.event_id = e.id AND d.status IN ('pending', 'in_flight'))
        """,
        keep_days,
    )
    await conn.execute(
        """
        DELETE FROM notification_endpoints ep
        WHERE ep.deleted_at < now() - make_interval(days => $1)
          AND NOT EXISTS (SELECT 1 FROM notification_deliveries d WHERE d.endpoint_id = ep.id)
        """,
        keep_days,
    )
    return int(result.split()[-1])


# Reading and replaying -----------------------------------------------------------------------


async def list_deliveries(
    conn: asyncpg.Connection,
    *,
    tenant_id: str | None,
    status: str | None = None,
    after: uuid.UUID | None = None,
    limit: int = 50,
) -> list[Delivery]:
    """Newest first, a page at a time: `after` is the last id of the previous page (a cursor
    that is not the tenant's gives an empty page). `tenant_id` None: every tenant's (CLI)."""
    rows = await conn.fetch(
        f"""
        SELECT {_DELIVERY}
        FROM notification_deliveries d JOIN tenant_events e ON e.id = d.event_id
        WHERE ($1::text IS NULL OR d.tenant_id = $1)
          AND ($2::text IS NULL OR d.status = $2)
          AND ($3::uuid IS NULL OR (d.created_at, d.id) < (
                SELECT c.created_at, c.id FROM notification_deliveries c
                WHERE c.id = $3 AND ($1::text IS NULL OR c.tenant_id = $1)))
        ORDER BY d.created_at DESC, d.id DESC
        LIMIT $4
        """,
        tenant_id,
        status,
        after,
        min(limit, MAX_PAGE),
    )
    return [Delivery(**dict(row)) for row in rows]


async def get_delivery(
    conn: asyncpg.Connection, delivery_id: uuid.UUID, *, tenant_id: str | None
) -> Delivery | None:
    row = await conn.fetchrow(
        f"SELECT {_DELIVERY} FROM notification_deliveries d "
        "JOIN tenant_events e ON e.id = d.event_id "
        "WHERE d.id = $1 AND ($2::text IS NULL OR d.tenant_id = $2)",
        delivery_id,
        tenant_id,
    )
    return Delivery(**dict(row)) if row else None


async def replay(
    conn: asyncpg.Connection, delivery_id: uuid.UUID, *, tenant_id: str | None
) -> tuple[Literal["replayed", "not_found", "not_dead", "endpoint_removed"], list[OutboxMessage]]:
    """Make a dead delivery pending again (attempts from zero) and dispatch it, in the caller's
    transaction. `tenant_id` None: any tenant's (CLI); otherwise another tenant's is not found."""
    row = await conn.fetchrow(
        "SELECT d.status, ep.deleted_at IS NOT NULL AS removed FROM notification_deliveries d "
        "JOIN notification_endpoints ep ON ep.id = d.endpoint_id "
        "WHERE d.id = $1 AND ($2::text IS NULL OR d.tenant_id = $2) FOR UPDATE OF d",
        delivery_id,
        tenant_id,
    )
    if row is None:
        return "not_found", []
    if row["status"] != "dead":
        return "not_dead", []
    if row["removed"]:
        return "endpoint_removed", []
    await conn.execute(
        """
        UPDATE notification_deliveries
        SET status = 'pending', attempts = 0, replays = replays + 1, next_attempt_at = now(),
            dispatched_at = now(), last_error = NULL, last_status = NULL, finished_at = NULL
        WHERE id = $1
        """,
        delivery_id,
    )
    return "replayed", await _dispatch(conn, [delivery_id])
