"""Bot supervision (queue "bots"): plan changes, tenant commands and the reconciler.

Actors:
- `apply_plan(tenant_ref, plan, active, source, provider_at)`: the payments follow-up. Applies
  an upgrade or downgrade (a downgrade stops live mode and drops symbols over the new limit),
  ignores a stale one (older provider time than the change already applied) and records every
  message in `plan_changes`. A tenant colmena does not know yet is recorded, not dead-lettered:
  `colmena tenants create --id <tenant_ref>` applies what waited for it.
- `run_command(command_id)`: converges a tenant after a start/stop/restart/configure command
  and records done or failed with the reason. The HTTP handler already stored the desired state
  (so a tenant's commands take effect in the order they were accepted); this only makes it so.
- `reconcile_tenant(tenant_id)`: converge one tenant (plan changes, `colmena bots reset`).
- `accept_key(tenant_id, provider)`: take in a provider key the ingress sealed to this side's
  X25519 key: open it, encrypt it at rest with the Fernet keys, drop the sealed copy, in one
  transaction. The newest key a tenant sent for a provider wins whatever order messages come
  in (one pending row per provider); a sealed key that does not open changes nothing. The same
  transaction records the `deliver_keys` follow-up.
- `deliver_keys(tenant_id)`: give the tenant's running bot its current keys (after a key was
  taken in or deleted) by replacing its keys file; nothing to do when no bot runs (its next
  start delivers them). It writes what is stored when it runs, so a repeated or late message
  writes the same file again, and the last change always wins.

Scheduled: `bots-reconcile` ticks every few seconds; every COLMENA_BOT_RECONCILE_INTERVAL_SECONDS
it runs `reconcile_all` (one label-filtered listing for every tenant), in between it only
restarts bots whose backoff has elapsed, so restarts keep close to the policy's delays.
`bots-ship-logs` copies bots' new log lines into the database every
COLMENA_BOT_LOG_SHIP_INTERVAL_SECONDS (the ingress reads them there) and trims old ones.

Failures go through the restart policy: a bot that exited, one whose heartbeat stayed stale for
COLMENA_BOT_UNHEALTHY_RESTART_SECONDS, and one the runtime refused to start (the engine's message
is logged and kept on the bots row for operators; the tenant sees the `start_failed` state while
the backoff runs, and reasons in colmena.domain.bot_failures' fixed words).

Per-tenant serialization: everything that acts on a tenant's bot holds the tenant's PostgreSQL
advisory lock, so two commands (or a command and the reconciler) never race; different tenants
proceed in parallel. Docker SDK calls block, so they run in threads. Provider keys are decrypted
only to create a bot or replace its keys file, and go nowhere else
(colmena.supervisor.key_delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import asyncpg
import structlog
from apscheduler.triggers.interval import IntervalTrigger

from colmena.config import Settings
from colmena.config.metrics import (
    BOT_CRASHLOOPS,
    BOT_RECONCILE_SECONDS,
    BOT_RESTARTS,
    BOT_START_FAILURES,
    BOT_UNHEALTHY_RESTARTS,
    SECURITY_EVENTS,
)
from colmena.domain.bot_failures import start_failure
from colmena.domain.key_sealing import SealError, open_sealed
from colmena.domain.tenants import decide_plan_change, fit_to_plan
from colmena.errors import PermanentError
from colmena.runtime.outbox import publish_now
from colmena.runtime.registry import actor
from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import scheduled
from colmena.store import notifications as notify_store
from colmena.store import provider_keys as keys_store
from colmena.store import tenants as store
from colmena.store.outbox import OutboxMessage
from colmena.supervisor.health import check_health, heartbeat_max_age
from colmena.supervisor.keys import newest_key_version, seal_private_key, secret_box
from colmena.supervisor.log_shipping import ship_all, ship_bot
from colmena.supervisor.plan_limits import stop_over_capital
from colmena.supervisor.reconciler import (
    Cause,
    Do,
    Step,
    after_failed_start,
    bot_events,
    decide,
    policy_from,
    spec_for,
    stale_for_long,
    with_keys,
)
from colmena.supervisor.restart_policy import RestartState
from colmena.supervisor.runtime import BotSpec, BotStartFailed, BotState, BotStatus, Runtime
from colmena.supervisor.runtimes import runtime_for

log = structlog.get_logger(__name__)

COMMAND_FAILED_REASON = "an internal error stopped this command (logged for the operator); retry it"

QUEUE = "bots"
TICK_S = 5
LOG_TICK_S = 1
_last_full_pass: dict[str, float] = {}
_last_log_ship: dict[str, float] = {}


async def runtime_of(settings: Settings) -> Runtime:
    return await asyncio.to_thread(runtime_for, settings)


# Plans -----------------------------------------------------------------------------------------


def _provider_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise PermanentError(f"provider_at is not an ISO-8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise PermanentError("provider_at must carry a timezone")
    return parsed


async def change_plan(
    conn: asyncpg.Connection,
    tenant_ref: str,
    plan: str,
    active: bool,
    source: str,
    provider_at: datetime,
    *,
    notices: list[OutboxMessage] | None = None,
) -> tuple[str, OutboxMessage | None]:
    """Apply one plan change inside the caller's transaction; (outcome, reconcile message).

    A plan that changed is a `plan.changed` tenant event, recorded here; its notification
    messages are added to `notices` for the caller to publish after commit (without a list,
    the outbox relay publishes them).
    """
    if await store.get_plan(conn, plan) is None:
        raise PermanentError(f"unknown plan {plan!r}")

    async def record(outcome: str, reason: str) -> None:
        await store.record_plan_change(
            conn,
            tenant_ref=tenant_ref,
            plan=plan,
            active=active,
            source=source,
            provider_at=provider_at,
            outcome=outcome,
            reason=reason,
        )

    tenant = await store.get_tenant(conn, tenant_ref, for_update=True)
    if tenant is None:
        await record(
            "unknown_tenant", "no such tenant yet; `colmena tenants create --id` applies it"
        )
        log.warning(
            "plan change for an unknown tenant recorded",
            tenant_id=tenant_ref,
            plan=plan,
            active=active,
        )
        return "unknown_tenant", None
    decision = decide_plan_change(
        current_plan=tenant.plan,
        current_source=tenant.plan_source,
        current_at=tenant.plan_provider_at,
        plan=plan,
        active=active,
        source=source,
        provider_at=provider_at,
    )
    await record(decision.outcome, decision.reason)
    if decision.plan is None:
        log.info(
            "plan change not applied",
            tenant_id=tenant_ref,
            outcome=decision.outcome,
            reason=decision.reason,
        )
        return decision.outcome, None
    await store.set_plan(conn, tenant_ref, decision.plan, source=source, provider_at=provider_at)
    new_plan = await store.get_plan(conn, decision.plan)
    if new_plan is None:
        raise PermanentError(f"plan {decision.plan!r} is missing from the plans table")
    bot = await store.get_bot(conn, tenant_ref, for_update=True)
    if bot is None:
        raise PermanentError(f"tenant {tenant_ref} has no bots row")
    fitted = fit_to_plan(bot.config, new_plan.limits())
    if fitted != bot.config:
        version = await store.set_config(conn, tenant_ref, fitted)
        log.info(
            "bot config fitted to the new plan",
            tenant_id=tenant_ref,
            plan=decision.plan,
            mode=fitted.get("mode"),
            config_version=version,
        )
    await stop_over_capital(conn, bot, new_plan)
    if decision.plan != tenant.plan:
        changed = {"from": tenant.plan, "to": decision.plan, "reason": decision.reason}
        rows = await notify_store.record_events(conn, tenant_ref, [("plan.changed", changed)])
        if notices is not None:
            notices.extend(rows)
    log.info(
        "plan applied",
        tenant_id=tenant_ref,
        old_plan=tenant.plan,
        plan=decision.plan,
        reason=decision.reason,
    )
    return "applied", await store.record_reconcile(conn, tenant_ref)


@actor(queue=QUEUE, name="apply_plan")
async def apply_plan(
    resources: Resources, tenant_ref: str, plan: str, active: bool, source: str, provider_at: str
) -> None:
    """Move a tenant to the plan the payments side says is (or no longer is) paid for."""
    at = _provider_time(provider_at)
    notices: list[OutboxMessage] = []
    async with resources.pool.acquire() as conn:
        async with conn.transaction():
            _, row = await change_plan(
                conn, tenant_ref, plan, bool(active), source, at, notices=notices
            )
        await publish_now(resources.pool, resources.publisher, [row, *notices])


# Commands and reconciling one tenant ----------------------------------------------------------


async def _decrypted_keys(
    conn: asyncpg.Connection, settings: Settings, tenant_id: str
) -> dict[str, str]:
    ciphertexts = await keys_store.key_ciphertexts(conn, tenant_id)
    if not ciphertexts:
        return {}
    box = secret_box(settings)
    return {provider: box.decrypt(token) for provider, token in ciphertexts.items()}


async def converge(
    conn: asyncpg.Connection,
    settings: Settings,
    runtime: Runtime,
    tenant_id: str,
    *,
    actual: BotStatus | None = None,
    listed: bool = False,
    force_restart: bool = False,
    notices: list[OutboxMessage] | None = None,
) -> Step | None:
    """Make the tenant's bot what its row says. The caller holds the tenant's lock.

    `listed` says `actual` comes from a listing the caller already made (reconcile_all);
    otherwise the runtime is listed here. None when the tenant does not exist. What changed
    for the tenant (started, stopped, crashed...) is recorded as tenant events in the
    transaction that stores the new state; their notification messages are added to `notices`
    for the caller to publish after commit (without a list, the outbox relay publishes them).
    """
    if not listed:
        actual = next(
            (b for b in await asyncio.to_thread(runtime.list_bots) if b.tenant_id == tenant_id),
            None,
        )
    row = await store.get_bot(conn, tenant_id)
    if row is None:
        if actual is not None:
            await asyncio.to_thread(
                runtime.remove_bot, actual.bot_id, settings.bot_stop_timeout_seconds
            )
            log.warning("bot of a tenant that no longer exists removed", tenant_id=tenant_id)
        return None
    spec = spec_for(
        tenant_id,
        row.config,
        row.config_version,
        memory_mb=row.plan.memory_mb,
        cpu_millis=row.plan.cpu_millis,
        settings=settings,
    )
    now = datetime.now(UTC)
    restart_state = RestartState(restarts=row.restarts, streak=row.streak, crashloop=row.crashloop)
    policy = policy_from(settings)
    healthy: bool | None = None
    unhealthy_since: datetime | None = None
    if (
        actual is not None
        and actual.state is BotState.RUNNING
        and row.desired == "running"
        and not force_restart
    ):
        max_age = heartbeat_max_age(settings.bot_heartbeat_seconds)
        healthy = await asyncio.to_thread(check_health, runtime, actual, now, max_age)
        unhealthy_since = None if healthy else (row.unhealthy_since or now)
    step = decide(
        desired_running=row.desired == "running",
        restart_state=restart_state,
        config_hash=spec.config_hash,
        actual=actual,
        policy=policy,
        now=now,
        force_restart=force_restart,
        start_failed_at=row.start_failed_at,
        # Step reasons reach the tenant (command reason, crashloop reason): its words, not the
        # runtime's, which stay in the log line and the bots row.
        start_error=start_failure(row.start_error).message if row.start_error else None,
        unhealthy_since=unhealthy_since,
    )
    decided = step
    if actual is not None and step.do in (Do.STOP, Do.START, Do.RESTART):
        await _ship_last_lines(conn, settings, runtime, actual)
    if step.do is Do.STOP:
        await asyncio.to_thread(runtime.stop_bot, tenant_id, settings.bot_stop_timeout_seconds)
    elif step.do in (Do.START, Do.RESTART):
        step = await _start(conn, settings, runtime, row, spec, step, restart_state)
    elif step.do is Do.CRASHLOOP and step.state is not None:
        BOT_CRASHLOOPS.inc()
        log.error(
            "bot in crashloop: no more restarts until the tenant or an operator acts",
            tenant_id=tenant_id,
            reason=step.reason,
            cause=step.cause,
            exit_code=actual.exit_code if actual else None,
        )
    replaced = step.do in (Do.STOP, Do.START, Do.RESTART, Do.START_FAILED)
    exit_code = actual.exit_code if actual is not None and actual.state is BotState.EXITED else None
    events = bot_events(
        row.observed,
        decided,
        step,
        became_unhealthy=stale_for_long(
            row.unhealthy_since,
            row.observed_at,
            unhealthy_since,
            now,
            heartbeat_max_age(settings.bot_heartbeat_seconds),
        ),
    )
    async with conn.transaction() if events else contextlib.nullcontext():
        if step.state is not None:
            await store.save_restart_state(
                conn,
                tenant_id,
                restarts=step.state.restarts,
                streak=step.state.streak,
                crashloop=step.state.crashloop,
                crashloop_reason=step.reason if step.state.crashloop else None,
                # A restart the runtime refused was still an attempt: it counts.
                restarted=step.do is Do.RESTART or step.do is Do.START_FAILED,
            )
        await store.set_observed(
            conn,
            tenant_id,
            step.observed,
            healthy=None if replaced else healthy,
            exit_code=exit_code,
            next_restart_at=step.restart_at,
            unhealthy_since=None if replaced else unhealthy_since,
        )
        rows = await notify_store.record_events(
            conn,
            tenant_id,
            [
                (
                    kind,
                    {
                        "reason": (decided if kind == "bot.crashed" else step).reason,
                        "state": step.observed,
                        "exit_code": exit_code,
                    },
                )
                for kind in events
            ],
        )
    if notices is not None:
        notices.extend(rows)
    return step


async def _start(
    conn: asyncpg.Connection,
    settings: Settings,
    runtime: Runtime,
    row: store.BotRow,
    spec: BotSpec,
    step: Step,
    restart_state: RestartState,
) -> Step:
    """Carry out a START or RESTART; a start the runtime refuses becomes a START_FAILED step."""
    tenant_id = row.tenant_id
    full = with_keys(spec, await _decrypted_keys(conn, settings, tenant_id))
    try:
        await asyncio.to_thread(runtime.start_bot, full)
    except BotStartFailed as exc:
        failed_at = datetime.now(UTC)  # the backoff counts from the refusal, not the pass
        told = start_failure(str(exc)).message
        failed = after_failed_start(step, told, restart_state, policy_from(settings), failed_at)
        await store.set_start_failure(conn, tenant_id, failed_at=failed_at, error=str(exc))
        BOT_START_FAILURES.inc()
        log.error(
            "bot failed to start",
            tenant_id=tenant_id,
            error=str(exc),
            next_attempt_at=failed.restart_at.isoformat() if failed.restart_at else None,
        )
        return failed
    if row.start_failed_at is not None:
        await store.set_start_failure(conn, tenant_id, failed_at=None, error=None)
    if step.do is Do.RESTART:
        BOT_RESTARTS.inc()
        if step.cause is Cause.HANG:
            BOT_UNHEALTHY_RESTARTS.inc()
            log.warning("unhealthy bot restarted", tenant_id=tenant_id, reason=step.reason)
        elif step.cause is Cause.START_FAILURE:
            log.warning("bot started after a failed start", tenant_id=tenant_id, reason=step.reason)
        else:
            log.warning("crashed bot restarted", tenant_id=tenant_id, reason=step.reason)
    else:
        log.info(
            "bot started",
            tenant_id=tenant_id,
            reason=step.reason,
            config_version=row.config_version,
        )
    return step


async def _ship_last_lines(
    conn: asyncpg.Connection, settings: Settings, runtime: Runtime, bot: BotStatus
) -> None:
    """Ship what a bot wrote since the last pass before it is replaced or stopped."""
    try:
        await ship_bot(conn, runtime, bot, keep=settings.bot_log_max_lines)
    except Exception as exc:  # its logs are worth less than converging the bot
        log.warning("could not ship the last lines of a bot", error=f"{type(exc).__name__}: {exc}")


async def reconcile_one(
    resources: Resources, tenant_id: str, *, force_restart: bool = False
) -> Step | None:
    """Converge one tenant under its lock (waiting for a command in progress)."""
    runtime = await runtime_of(resources.settings)
    started = time.perf_counter()
    notices: list[OutboxMessage] = []
    async with resources.pool.acquire() as conn, store.tenant_lock(conn, tenant_id):
        try:
            step = await converge(
                conn,
                resources.settings,
                runtime,
                tenant_id,
                force_restart=force_restart,
                notices=notices,
            )
        finally:
            BOT_RECONCILE_SECONDS.labels(scope="tenant").observe(time.perf_counter() - started)
    await publish_now(resources.pool, resources.publisher, notices)
    return step


@actor(queue=QUEUE, name="reconcile_tenant")
async def reconcile_tenant(resources: Resources, tenant_id: str) -> None:
    with structlog.contextvars.bound_contextvars(tenant_id=tenant_id):
        await reconcile_one(resources, tenant_id)


def _superseded(command: store.Command, desired: str) -> str | None:
    if command.kind in ("start", "restart") and desired != "running":
        return "superseded: a later stop is in effect"
    if command.kind == "stop" and desired != "stopped":
        return "superseded: a later start is in effect"
    return None


@actor(queue=QUEUE, name="run_command")
async def run_command(resources: Resources, command_id: str) -> None:
    """Carry out a tenant's command; the outcome (done/failed, reason) lands on the command row."""
    try:
        key = uuid.UUID(command_id)
    except (TypeError, ValueError):
        raise PermanentError(f"command id is not a UUID: {command_id!r}") from None
    async with resources.pool.acquire() as conn:
        command = await store.get_command(conn, key)
        if command is None:
            raise PermanentError(f"command {command_id} does not exist")
        if command.status != "queued":
            log.info("command already finished", command_id=command_id, status=command.status)
            return
        runtime = await runtime_of(resources.settings)
        with structlog.contextvars.bound_contextvars(
            tenant_id=command.tenant_id, command_id=command_id
        ):
            notices: list[OutboxMessage] = []
            async with store.tenant_lock(conn, command.tenant_id):
                await _run_locked(conn, resources.settings, runtime, key, notices)
            await publish_now(resources.pool, resources.publisher, notices)


async def _run_locked(
    conn: asyncpg.Connection,
    settings: Settings,
    runtime: Runtime,
    key: uuid.UUID,
    notices: list[OutboxMessage],
) -> None:
    command = await store.get_command(conn, key)
    if command is None or command.status != "queued":
        return  # a duplicate delivery finished it while we waited for the lock
    row = await store.get_bot(conn, command.tenant_id)
    superseded = _superseded(command, row.desired) if row is not None else "tenant deleted"
    if superseded:
        await store.finish_command(conn, key, "done", superseded)
        return
    started = time.perf_counter()
    try:
        step = await converge(
            conn,
            settings,
            runtime,
            command.tenant_id,
            force_restart=command.kind == "restart",
            notices=notices,
        )
    except Exception as exc:  # the reconciler keeps converging
        # The tenant gets fixed words: an unexpected error's text can hold host paths and engine
        # internals. The operator has it whole in the log line.
        await store.finish_command(conn, key, "failed", COMMAND_FAILED_REASON)
        log.exception("bot command failed", kind=command.kind, error=f"{type(exc).__name__}: {exc}")
        return
    finally:
        BOT_RECONCILE_SECONDS.labels(scope="tenant").observe(time.perf_counter() - started)
    if step is not None and step.do is Do.START_FAILED:
        await store.finish_command(conn, key, "failed", step.reason[:500])
        log.warning("bot command failed", kind=command.kind, reason=step.reason)
        return
    await store.finish_command(conn, key, "done", step.reason if step else None)
    log.info("bot command done", kind=command.kind, reason=step.reason if step else None)


# Provider keys --------------------------------------------------------------------------------


@actor(queue=QUEUE, name=keys_store.ACCEPT_ACTOR)
async def accept_key(resources: Resources, tenant_id: str, provider: str) -> None:
    """Open a key the ingress sealed, encrypt it at rest and drop the sealed copy, atomically."""
    settings = resources.settings
    private_key = seal_private_key(settings)
    box, version = secret_box(settings), newest_key_version(settings)
    with structlog.contextvars.bound_contextvars(tenant_id=tenant_id, provider=provider):
        async with resources.pool.acquire() as conn, conn.transaction():
            pending = await keys_store.lock_pending(conn, tenant_id, provider)
            if pending is None:
                log.info("no pending provider key: taken in or deleted already")
                return
            try:
                plaintext = open_sealed(
                    private_key, pending.sealed, tenant_id=tenant_id, provider=provider
                )
            except SealError as exc:
                SECURITY_EVENTS.labels(reason="sealed_key_refused").inc()
                log.error("security: sealed provider key refused", reason=str(exc))
                raise
            await keys_store.put_key(
                conn,
                tenant_id,
                provider,
                ciphertext=box.encrypt(plaintext),
                last4=pending.last4,
                key_version=version,
            )
            await keys_store.delete_pending(conn, tenant_id, provider)
            delivery = await keys_store.record_delivery(conn, tenant_id)
        log.info("provider key taken in", key_version=version)
        await publish_now(resources.pool, resources.publisher, [delivery])


@actor(queue=QUEUE, name=keys_store.DELIVER_ACTOR)
async def deliver_keys(resources: Resources, tenant_id: str) -> None:
    """Replace the running bot's keys file with the keys stored now, under the tenant's lock.

    The lock orders this after a start in progress (which read the keys before this change
    committed) and before the next one. A bot that could not take the file raises
    KeysNotDelivered, which is retried: it keeps its old keys until then.
    """
    settings = resources.settings
    runtime = await runtime_of(settings)
    with structlog.contextvars.bound_contextvars(tenant_id=tenant_id):
        async with resources.pool.acquire() as conn, store.tenant_lock(conn, tenant_id):
            keys = await _decrypted_keys(conn, settings, tenant_id)
            delivered = await asyncio.to_thread(runtime.replace_keys, tenant_id, keys)
        if delivered:
            log.info("provider keys delivered to the running bot", providers=len(keys))
        else:
            log.info("no running bot: its next start delivers the keys")


# Every tenant ---------------------------------------------------------------------------------


async def reconcile_all(resources: Resources) -> Counter[str]:
    """One pass over every tenant with one listing; returns how many tenants got each step.

    Bots carrying this instance's label but no (known) tenant are removed. A tenant whose lock
    is held (a command is converging it right now) is skipped: that command does the work.
    """
    settings = resources.settings
    started = time.perf_counter()
    runtime = await runtime_of(settings)
    actual = await asyncio.to_thread(runtime.list_bots)
    async with resources.pool.acquire() as conn:
        tenant_ids = [row.tenant_id for row in await store.list_bots(conn)]
    known = set(tenant_ids)
    by_tenant = {bot.tenant_id: bot for bot in actual if bot.tenant_id in known}
    outcome: Counter[str] = Counter()
    for orphan in (bot for bot in actual if bot.tenant_id not in known):
        await asyncio.to_thread(
            runtime.remove_bot, orphan.bot_id, settings.bot_stop_timeout_seconds
        )
        log.warning(
            "bot without a known tenant removed",
            bot_id=orphan.bot_id[:12],
            tenant_id=orphan.tenant_id,
        )
        outcome["orphan_removed"] += 1
    gate = asyncio.Semaphore(settings.bot_reconcile_concurrency)

    async def one(tenant_id: str) -> str:
        async with (
            gate,
            resources.pool.acquire() as conn,
            store.try_tenant_lock(conn, tenant_id) as got,
        ):
            if not got:
                return "busy"
            notices: list[OutboxMessage] = []
            step = await converge(
                conn,
                settings,
                runtime,
                tenant_id,
                actual=by_tenant.get(tenant_id),
                listed=True,
                notices=notices,
            )
            await publish_now(resources.pool, resources.publisher, notices)
            return step.do.value if step else "gone"

    results = await asyncio.gather(
        *(one(tenant_id) for tenant_id in tenant_ids), return_exceptions=True
    )
    for tenant_id, result in zip(tenant_ids, results, strict=True):
        if isinstance(result, BaseException):
            outcome["error"] += 1
            log.error(
                "reconcile failed for a tenant",
                tenant_id=tenant_id,
                error=f"{type(result).__name__}: {result}",
            )
        else:
            outcome[result] += 1
    elapsed = time.perf_counter() - started
    BOT_RECONCILE_SECONDS.labels(scope="all").observe(elapsed)
    log.info("reconcile pass done", tenants=len(tenant_ids), seconds=round(elapsed, 3), **outcome)
    return outcome


async def reconcile_due(resources: Resources) -> int:
    """Restart the bots whose backoff has elapsed since the last pass."""
    async with resources.pool.acquire() as conn:
        due = await store.due_restarts(conn)
    for tenant_id in due:
        await reconcile_one(resources, tenant_id)
    return len(due)


@scheduled("bots-reconcile", IntervalTrigger(seconds=TICK_S))
async def reconcile_tick(resources: Resources) -> None:
    """A full pass every COLMENA_BOT_RECONCILE_INTERVAL_SECONDS, due restarts between them."""
    settings = resources.settings
    last = _last_full_pass.get(settings.bot_instance)
    now = time.monotonic()
    if last is None or now - last >= settings.bot_reconcile_interval_seconds - TICK_S / 2:
        _last_full_pass[settings.bot_instance] = now
        await reconcile_all(resources)
    else:
        await reconcile_due(resources)


async def ship_logs(resources: Resources) -> int:
    """Copy every bot's new log lines into the database; returns how many were shipped."""
    settings = resources.settings
    return await ship_all(
        resources.pool,
        await runtime_of(settings),
        keep=settings.bot_log_max_lines,
        concurrency=settings.bot_reconcile_concurrency,
    )


@scheduled("bots-ship-logs", IntervalTrigger(seconds=LOG_TICK_S))
async def ship_logs_tick(resources: Resources) -> None:
    """Ship bots' logs every COLMENA_BOT_LOG_SHIP_INTERVAL_SECONDS."""
    settings = resources.settings
    last = _last_log_ship.get(settings.bot_instance)
    now = time.monotonic()
    if last is None or now - last >= settings.bot_log_ship_interval_seconds - LOG_TICK_S / 2:
        _last_log_ship[settings.bot_instance] = now
        await ship_logs(resources)
