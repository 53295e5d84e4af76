"""Queries on tenants, plans, bots' desired state, bot commands and plan changes.

Tokens arrive here already hashed: nothing in this module ever sees a secret in plain text
(provider keys have their own module, `provider_keys`).
"""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from colmena.domain.tenants import PlanLimits
from colmena.store import outbox
from colmena.store.locks import advisory_lock, lock_space, try_advisory_lock
from colmena.store.outbox import OutboxMessage

# Per-tenant work ("BOTS"); the lock's key is the tenant id (hashtext).
TENANT_LOCK_SPACE = lock_space("BOTS")


@dataclass(frozen=True)
class Plan:
    name: str
    max_symbols: int
    live_allowed: bool
    memory_mb: int
    cpu_millis: int
    log_retention_days: int
    max_capital: Decimal

    def limits(self) -> PlanLimits:
        """What a bot config must fit on this plan (colmena.domain.tenants checks it)."""
        return PlanLimits(self.max_symbols, self.live_allowed, self.max_capital)


@dataclass(frozen=True)
class Tenant:
    id: str
    email: str
    plan: str
    plan_source: str | None
    plan_provider_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class BotRow:
    """A tenant's bot as colmena wants it, with its plan and the supervisor's bookkeeping."""

    tenant_id: str
    plan: Plan
    desired: str
    config: dict[str, Any]
    config_version: int
    restarts: tuple[datetime, ...]
    streak: int
    restarts_total: int
    crashloop: bool
    crashloop_reason: str | None
    next_restart_at: datetime | None
    observed: str
    observed_at: datetime | None
    healthy: bool | None
    last_exit_code: int | None
    unhealthy_since: datetime | None = None
    # The last start the runtime refused, if none succeeded since, and the runtime's message
    # about it: for operators only (a tenant sees colmena.domain.bot_failures' view of it).
    start_failed_at: datetime | None = None
    start_error: str | None = None


@dataclass(frozen=True)
class Command:
    id: uuid.UUID
    tenant_id: str
    kind: str
    requested_by: str
    status: str
    reason: str | None
    created_at: datetime
    finished_at: datetime | None


_TENANT = "id, email, plan, plan_source, plan_provider_at, created_at"
_PLAN = "name, max_symbols, live_allowed, memory_mb, cpu_millis, log_retention_days, max_capital"
_BOT = (
    "b.tenant_id, b.desired, b.config, b.config_version, b.restarts, b.streak, b.restarts_total, "
    "b.crashloop, b.crashloop_reason, b.next_restart_at, b.observed, b.observed_at, b.healthy, "
    "b.last_exit_code, b.unhealthy_since, b.start_failed_at, b.start_error, "
    "p.name, p.max_symbols, p.live_allowed, p.memory_mb, p.cpu_millis, p.log_retention_days, "
    "p.max_capital"
)
_BOT_FROM = "bots b JOIN tenants t ON t.id = b.tenant_id JOIN plans p ON p.name = t.plan"
_COMMAND = "id, tenant_id, kind, requested_by, status, reason, created_at, finished_at"


def _plan(row: asyncpg.Record) -> Plan:
    return Plan(**{name: row[name] for name in _PLAN.split(", ")})


def _bot(row: asyncpg.Record) -> BotRow:
    return BotRow(
        tenant_id=row["tenant_id"],
        plan=_plan(row),
        desired=row["desired"],
        config=row["config"],
        config_version=row["config_version"],
        restarts=tuple(row["restarts"]),
        streak=row["streak"],
        restarts_total=row["restarts_total"],
        crashloop=row["crashloop"],
        crashloop_reason=row["crashloop_reason"],
        next_restart_at=row["next_restart_at"],
        observed=row["observed"],
        observed_at=row["observed_at"],
        healthy=row["healthy"],
        last_exit_code=row["last_exit_code"],
        unhealthy_since=row["unhealthy_since"],
        start_failed_at=row["start_failed_at"],
        start_error=row["start_error"],
    )


def tenant_lock(conn: asyncpg.Connection, tenant_id: str) -> AbstractAsyncContextManager[None]:
    """The tenant's session lock, waited for: commands and reconciles of one tenant never
    overlap."""
    return advisory_lock(conn, TENANT_LOCK_SPACE, tenant_id)


def try_tenant_lock(conn: asyncpg.Connection, tenant_id: str) -> AbstractAsyncContextManager[bool]:
    """The tenant's session lock if it is free (the reconcile pass skips a busy tenant)."""
    return try_advisory_lock(conn, TENANT_LOCK_SPACE, tenant_id)


# Plans ---------------------------------------------------------------------------------------


async def get_plan(conn: asyncpg.Connection, name: str) -> Plan | None:
    row = await conn.fetchrow(f"SELECT {_PLAN} FROM plans WHERE name = $1", name)
    return _plan(row) if row else None


async def list_plans(conn: asyncpg.Connection) -> list[Plan]:
    return [
        _plan(row)
        for row in await conn.fetch(f"SELECT {_PLAN} FROM plans ORDER BY memory_mb, name")
    ]


# Tenants -------------------------------------------------------------------------------------


async def create_tenant(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    email: str,
    plan: str,
    token_sha256: bytes,
    config: dict[str, Any],
    plan_source: str = "operator",
) -> Tenant | None:
    """The new tenant with a stopped bot; None when the id is taken. `plan_source` says who set
    the plan: 'operator' (`colmena tenants create`) or 'signup' (a self-service account)."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO tenants (id, email, plan, plan_source, token_sha256)
        VALUES ($1, $2, $3, $5, $4)
        ON CONFLICT (id) DO NOTHING RETURNING {_TENANT}
        """,
        tenant_id,
        email,
        plan,
        token_sha256,
        plan_source,
    )
    if row is None:
        return None
    await conn.execute("INSERT INTO bots (tenant_id, config) VALUES ($1, $2)", tenant_id, config)
    return Tenant(**dict(row))


async def get_tenant(
    conn: asyncpg.Connection, tenant_id: str, *, for_update: bool = False
) -> Tenant | None:
    """The tenant; with `for_update`, locked against other changes of its row until the
    transaction ends. FOR NO KEY UPDATE, as an UPDATE of its columns takes: FOR UPDATE would
    also block every row inserted meanwhile that references the tenant (its foreign-key check
    takes KEY SHARE), and a bot reconcile that has updated the bot row, then records a tenant
    event, would deadlock with a config change that holds the tenant and waits for that row."""
    lock = " FOR NO KEY UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_TENANT} FROM tenants WHERE id = $1{lock}", tenant_id)
    return Tenant(**dict(row)) if row else None


async def tenant_by_token(
    conn: asyncpg.Connection, token_sha256: bytes
) -> tuple[Tenant, bytes] | None:
    """The tenant holding this token digest, with the stored digest for a constant-time check."""
    row = await conn.fetchrow(
        f"SELECT {_TENANT}, token_sha256 FROM tenants WHERE token_sha256 = $1", token_sha256
    )
    if row is None:
        return None
    fields = dict(row)
    stored = fields.pop("token_sha256")
    return Tenant(**fields), bytes(stored)


async def known_tenants(conn: asyncpg.Connection, tenant_ids: list[str]) -> set[str]:
    """Which of `tenant_ids` exist."""
    rows = await conn.fetch("SELECT id FROM tenants WHERE id = ANY($1::text[])", tenant_ids)
    return {row["id"] for row in rows}


async def set_token(conn: asyncpg.Connection, tenant_id: str, token_sha256: bytes) -> bool:
    done = await conn.execute(
        "UPDATE tenants SET token_sha256 = $2, token_rotated_at = now() WHERE id = $1",
        tenant_id,
        token_sha256,
    )
    return done == "UPDATE 1"


async def list_tenants(conn: asyncpg.Connection) -> list[Tenant]:
    return [
        Tenant(**dict(row))
        for row in await conn.fetch(f"SELECT {_TENANT} FROM tenants ORDER BY created_at, id")
    ]


async def set_plan(
    conn: asyncpg.Connection, tenant_id: str, plan: str, *, source: str, provider_at: datetime
) -> None:
    await conn.execute(
        "UPDATE tenants SET plan = $2, plan_source = $3, plan_provider_at = $4 WHERE id = $1",
        tenant_id,
        plan,
        source,
        provider_at,
    )


# Bots ----------------------------------------------------------------------------------------


async def get_bot(
    conn: asyncpg.Connection, tenant_id: str, *, for_update: bool = False
) -> BotRow | None:
    lock = " FOR UPDATE OF b" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_BOT} FROM {_BOT_FROM} WHERE b.tenant_id = $1{lock}", tenant_id
    )
    return _bot(row) if row else None


async def list_bots(conn: asyncpg.Connection) -> list[BotRow]:
    return [
        _bot(row)
        for row in await conn.fetch(f"SELECT {_BOT} FROM {_BOT_FROM} ORDER BY b.tenant_id")
    ]


async def bot_is_stopped(conn: asyncpg.Connection, tenant_id: str) -> bool:
    """Whether the tenant wants its bot stopped and the last pass saw it so (or it is gone)."""
    stopped: bool | None = await conn.fetchval(
        "SELECT desired = 'stopped' AND observed = 'stopped' FROM bots WHERE tenant_id = $1",
        tenant_id,
    )
    return stopped is not False


async def due_restarts(conn: asyncpg.Connection) -> list[str]:
    """Tenants whose backoff has elapsed: restarted between full passes, so backoff stays close
    to the policy."""
    rows = await conn.fetch(
        "SELECT tenant_id FROM bots "
        "WHERE next_restart_at <= now() AND desired = 'running' AND NOT crashloop"
    )
    return [row["tenant_id"] for row in rows]


async def set_desired(
    conn: asyncpg.Connection, tenant_id: str, desired: str, *, reset_restarts: bool
) -> None:
    """Record what the tenant wants; an explicit start or restart also lifts a crashloop and
    retries a failed start at once."""
    reset = (
        ", restarts = '{}', streak = 0, crashloop = false, crashloop_reason = NULL, "
        "next_restart_at = NULL, start_failed_at = NULL"
        if reset_restarts
        else ""
    )
    await conn.execute(
        f"UPDATE bots SET desired = $2, updated_at = now(){reset} WHERE tenant_id = $1",
        tenant_id,
        desired,
    )


async def reset_restarts(conn: asyncpg.Connection, tenant_id: str) -> bool:
    done = await conn.execute(
        """
        UPDATE bots SET restarts = '{}', streak = 0, crashloop = false, crashloop_reason = NULL,
               next_restart_at = NULL, start_failed_at = NULL, updated_at = now()
        WHERE tenant_id = $1
        """,
        tenant_id,
    )
    return done == "UPDATE 1"


async def set_config(conn: asyncpg.Connection, tenant_id: str, config: dict[str, Any]) -> int:
    """Store a new config; returns its version (unchanged when the config is the same)."""
    version: int = await conn.fetchval(
        """
        UPDATE bots SET config = $2,
               config_version = config_version + CASE WHEN config = $2::jsonb THEN 0 ELSE 1 END,
               updated_at = now()
        WHERE tenant_id = $1 RETURNING config_version
        """,
        tenant_id,
        config,
    )
    return version


async def save_restart_state(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    restarts: tuple[datetime, ...],
    streak: int,
    crashloop: bool,
    crashloop_reason: str | None,
    restarted: bool,
) -> None:
    await conn.execute(
        """
        UPDATE bots SET restarts = $2, streak = $3, crashloop = $4, crashloop_reason = $5,
               restarts_total = restarts_total + $6, updated_at = now()
        WHERE tenant_id = $1
        """,
        tenant_id,
        list(restarts),
        streak,
        crashloop,
        crashloop_reason,
        int(restarted),
    )


async def set_observed(
    conn: asyncpg.Connection,
    tenant_id: str,
    observed: str,
    *,
    healthy: bool | None,
    exit_code: int | None,
    next_restart_at: datetime | None,
    unhealthy_since: datetime | None = None,
) -> None:
    """What this pass saw; `next_restart_at` is only kept while backing off, `unhealthy_since`
    only while a running bot's heartbeat stays stale."""
    await conn.execute(
        """
        UPDATE bots SET observed = $2, observed_at = now(), healthy = $3,
               last_exit_code = coalesce($4, last_exit_code), next_restart_at = $5,
               unhealthy_since = $6
        WHERE tenant_id = $1
        """,
        tenant_id,
        observed,
        healthy,
        exit_code,
        next_restart_at,
        unhealthy_since,
    )


async def set_start_failure(
    conn: asyncpg.Connection, tenant_id: str, *, failed_at: datetime | None, error: str | None
) -> None:
    """Remember a start the runtime refused (the restart policy counts from `failed_at`), or
    forget it (None) once a start succeeded. The message stays until the next failure."""
    await conn.execute(
        """
        UPDATE bots SET start_failed_at = $2, start_error = coalesce($3, start_error)
        WHERE tenant_id = $1
        """,
        tenant_id,
        failed_at,
        error,
    )


async def state_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """Bots per state for the colmena_bots gauge; a running bot without a heartbeat is unhealthy."""
    rows = await conn.fetch(
        """
        SELECT CASE WHEN observed = 'running' AND healthy IS FALSE THEN 'unhealthy'
                    ELSE observed END AS state,
               count(*) AS n
        FROM bots GROUP BY 1
        """
    )
    return {row["state"]: row["n"] for row in rows}


# Commands ------------------------------------------------------------------------------------


async def insert_command(
    conn: asyncpg.Connection, tenant_id: str, kind: str, *, requested_by: str
) -> uuid.UUID:
    command_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO bot_commands (id, tenant_id, kind, requested_by) VALUES ($1, $2, $3, $4)",
        command_id,
        tenant_id,
        kind,
        requested_by,
    )
    return command_id


async def record_command(
    conn: asyncpg.Connection, tenant_id: str, kind: str, *, requested_by: str
) -> tuple[uuid.UUID, OutboxMessage | None]:
    """A queued command and, in the caller's transaction, the message that will run it."""
    command_id = await insert_command(conn, tenant_id, kind, requested_by=requested_by)
    row = await outbox.record(
        conn,
        queue="bots",
        actor="run_command",
        args=[str(command_id)],
        dedupe_key=f"bot-command:{command_id}",
    )
    return command_id, row


async def record_reconcile(conn: asyncpg.Connection, tenant_id: str) -> OutboxMessage | None:
    """Ask for a reconcile of one tenant once the caller's transaction commits."""
    return await outbox.record(conn, queue="bots", actor="reconcile_tenant", args=[tenant_id])


async def get_command(
    conn: asyncpg.Connection, command_id: uuid.UUID, *, for_update: bool = False
) -> Command | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_COMMAND} FROM bot_commands WHERE id = $1{lock}", command_id
    )
    return Command(**dict(row)) if row else None


async def commands_in_flight(
    conn: asyncpg.Connection, tenant_id: str, *, newer_than_s: float
) -> int:
    """The tenant's commands still queued that were accepted in the last `newer_than_s`."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM bot_commands WHERE tenant_id = $1 AND status = 'queued' "
        "AND created_at > now() - make_interval(secs => $2)",
        tenant_id,
        newer_than_s,
    )
    return count


async def finish_command(
    conn: asyncpg.Connection, command_id: uuid.UUID, status: str, reason: str | None
) -> None:
    await conn.execute(
        "UPDATE bot_commands SET status = $2, reason = $3, finished_at = now() "
        "WHERE id = $1 AND status = 'queued'",
        command_id,
        status,
        reason,
    )


# Plan changes --------------------------------------------------------------------------------


async def record_plan_change(
    conn: asyncpg.Connection,
    *,
    tenant_ref: str,
    plan: str,
    active: bool,
    source: str,
    provider_at: datetime,
    outcome: str,
    reason: str,
) -> None:
    await conn.execute(
        """
        INSERT INTO plan_changes (tenant_ref, plan, active, source, provider_at, outcome, reason)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        """,
        tenant_ref,
        plan,
        active,
        source,
        provider_at,
        outcome,
        reason,
    )


async def waiting_plan_changes(conn: asyncpg.Connection, tenant_ref: str) -> list[asyncpg.Record]:
    """Plan changes that arrived before the tenant existed, oldest first."""
    return await conn.fetch(
        "SELECT plan, active, source, provider_at FROM plan_changes "
        "WHERE tenant_ref = $1 AND outcome = 'unknown_tenant' ORDER BY provider_at, id",
        tenant_ref,
    )
