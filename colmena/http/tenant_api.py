"""The tenant API's bot commands, command status, bot status and config (`/api/v1/bot`,
`/api/v1/commands`).

Commands change the desired state in the request's transaction (so a tenant's commands take
effect in the order they were accepted), record a queued command and its outbox message, and
answer 202 with the command id; the `bots` actors converge the runtime and finish the command.
A tenant has at most COLMENA_TENANT_MAX_COMMANDS_IN_FLIGHT commands not yet done: they are
counted under the bots row's lock, so concurrent requests (in any process) cannot overshoot it,
and the next one is a 429 with Retry-After. A command still queued after STALE_COMMAND_S (its
message dead-lettered, say) no longer counts, so a lost command cannot lock a tenant out.
Status is what the reconciler last observed, read from the bots table, a refused start told in
tenant-safe words (`bot_view`). A tenant reaches only its own resources: another tenant's
command id is a 404, exactly like an id that does not exist.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from colmena.domain.bot_failures import start_failure
from colmena.domain.tenants import ConfigError, capital_over_plan, validate_config
from colmena.http.context import SETTINGS
from colmena.http.errors import ApiError
from colmena.http.payloads import field_errors, iso, json_body
from colmena.http.publishing import AFTER_COMMIT
from colmena.http.tenant_auth import TENANT, tenant_gone
from colmena.http.tenant_limits import tenant_connection, too_many
from colmena.store import tenants as store
from colmena.store.outbox import OutboxMessage

log = structlog.get_logger(__name__)

STALE_COMMAND_S = 900.0
COMMAND_RETRY_AFTER_S = 5


async def _refuse_when_busy(conn: asyncpg.Connection, tenant_id: str, limit: int) -> None:
    """429 when the tenant has `limit` commands not yet done; call under the bots row's lock."""
    if await store.commands_in_flight(conn, tenant_id, newer_than_s=STALE_COMMAND_S) >= limit:
        raise too_many(
            "too_many_commands",
            f"{limit} commands are not done yet; retry when one is",
            retry_after_s=COMMAND_RETRY_AFTER_S,
        )


async def queue_command(
    request: web.Request,
    tenant_id: str,
    kind: str,
    *,
    requested_by: str,
    in_flight_limit: int | None = None,
) -> web.Response:
    """Store the desired state and a queued command with its message; 202 with the command id.

    With `in_flight_limit`, a tenant already that many commands behind gets a 429 instead.
    """
    async with tenant_connection(request) as conn, conn.transaction():
        command_id, row = await record_bot_command(
            conn, tenant_id, kind, requested_by=requested_by, in_flight_limit=in_flight_limit
        )
    request.config_dict[AFTER_COMMIT].submit([row])
    log.info(
        "bot command accepted", kind=kind, command_id=str(command_id), requested_by=requested_by
    )
    return web.json_response({"command_id": str(command_id), "status": "queued"}, status=202)


async def record_bot_command(
    conn: asyncpg.Connection,
    tenant_id: str,
    kind: str,
    *,
    requested_by: str,
    in_flight_limit: int | None = None,
) -> tuple[uuid.UUID, OutboxMessage | None]:
    """The desired state and a queued command with its message, in the caller's transaction
    (the API and the console share it; the caller publishes the message after commit)."""
    desired = "stopped" if kind == "stop" else "running"
    if in_flight_limit is not None:
        bot = await _bot(conn, tenant_id, for_update=True)
        if kind != "stop":
            _refuse_over_plan(bot)
        await _refuse_when_busy(conn, tenant_id, in_flight_limit)
    await store.set_desired(conn, tenant_id, desired, reset_restarts=kind != "stop")
    return await store.record_command(conn, tenant_id, kind, requested_by=requested_by)


def _refuse_over_plan(bot: store.BotRow) -> None:
    """409 for a start of a config the plan no longer allows (its plan shrank since it was
    stored: the plan change stopped the bot, and it stays stopped until the config fits)."""
    capital = capital_over_plan(bot.config, bot.plan.limits())
    if capital is not None:
        raise ApiError(
            409,
            "config_over_plan",
            f"the config's capital {capital} is over plan {bot.plan.name}'s "
            f"{bot.plan.max_capital.normalize():f}: PUT /api/v1/bot/config with one that fits",
        )


def bot_view(bot: store.BotRow) -> dict[str, Any]:
    """The bot as the reconciler last saw it, for its tenant (and the admin listing).

    A start the runtime refused shows as `start_failed_at` and `start_error`, a kind and a fixed
    sentence (colmena.domain.bot_failures), never the runtime's own message: that one can hold
    host paths and engine internals, the tenant can do nothing about any of them, and operators
    have it in full in the "bot failed to start" log line. Both are null once a start succeeds
    or the tenant starts the bot again.
    """
    failure = start_failure(bot.start_error or "") if bot.start_failed_at is not None else None
    return {
        "tenant": bot.tenant_id,
        "plan": bot.plan.name,
        "desired": bot.desired,
        "actual": bot.observed,
        "healthy": bot.healthy,
        "observed_at": iso(bot.observed_at),
        "config_version": bot.config_version,
        "restarts": bot.restarts_total,
        "crashloop": bot.crashloop,
        "crashloop_reason": bot.crashloop_reason,
        "next_restart_at": iso(bot.next_restart_at),
        "last_exit_code": bot.last_exit_code,
        "start_failed_at": iso(bot.start_failed_at),
        "start_error": (
            {"code": failure.kind.value, "message": failure.message} if failure else None
        ),
    }


async def _bot(
    conn: asyncpg.Connection, tenant_id: str, *, for_update: bool = False
) -> store.BotRow:
    """The tenant's bots row (every tenant has one from creation, until it is deleted)."""
    bot = await store.get_bot(conn, tenant_id, for_update=for_update)
    if bot is None:
        raise tenant_gone()
    return bot


async def bot_command(request: web.Request) -> web.Response:
    tenant = request[TENANT]
    return await queue_command(
        request,
        tenant.id,
        request.match_info["action"],
        requested_by="tenant",
        in_flight_limit=request.config_dict[SETTINGS].tenant_max_commands_in_flight,
    )


async def get_command(request: web.Request) -> web.Response:
    tenant = request[TENANT]
    try:
        command_id = uuid.UUID(request.match_info["command_id"])
    except ValueError:
        raise ApiError(404, "not_found", "no such command") from None
    async with tenant_connection(request) as conn:
        command = await store.get_command(conn, command_id)
    if command is None or command.tenant_id != tenant.id:
        raise ApiError(404, "not_found", "no such command")
    return web.json_response(
        {
            "command_id": str(command.id),
            "kind": command.kind,
            "status": command.status,
            "reason": command.reason,
            "requested_by": command.requested_by,
            "created_at": iso(command.created_at),
            "finished_at": iso(command.finished_at),
        }
    )


async def bot_status(request: web.Request) -> web.Response:
    async with tenant_connection(request) as conn:
        bot = await _bot(conn, request[TENANT].id)
    return web.json_response(bot_view(bot))


async def get_config(request: web.Request) -> web.Response:
    async with tenant_connection(request) as conn:
        bot = await _bot(conn, request[TENANT].id)
    limits = {
        "max_symbols": bot.plan.max_symbols,
        "live_allowed": bot.plan.live_allowed,
        "max_capital": format(bot.plan.max_capital.normalize(), "f"),
    }
    return web.json_response(
        {
            "config": bot.config,
            "config_version": bot.config_version,
            "plan": bot.plan.name,
            "limits": limits,
        }
    )


@dataclass(frozen=True)
class ConfigChange:
    """What storing a config did: its version, and the configure command when it changed."""

    config: dict[str, Any]
    version: int
    command_id: uuid.UUID | None = None
    message: OutboxMessage | None = None


async def apply_config(
    conn: asyncpg.Connection, tenant_id: str, body: Any, *, in_flight_limit: int
) -> ConfigChange:
    """Validate `body` against the tenant's plan and store it with its configure command, in the
    caller's transaction (the API and the console share it). ConfigError names every wrong
    field; the caller's transaction then rolls back, so nothing changed."""
    # Tenant row first (as apply_plan does): the plan cannot change under the validation.
    if await store.get_tenant(conn, tenant_id, for_update=True) is None:
        raise tenant_gone()
    bot = await _bot(conn, tenant_id, for_update=True)
    config = validate_config(body, bot.plan.name, bot.plan.limits())
    version = await store.set_config(conn, tenant_id, config)
    if version == bot.config_version:
        return ConfigChange(config, version)
    await _refuse_when_busy(conn, tenant_id, in_flight_limit)
    await store.reset_restarts(conn, tenant_id)
    command_id, row = await store.record_command(
        conn, tenant_id, "configure", requested_by="tenant"
    )
    return ConfigChange(config, version, command_id, row)


async def put_config(request: web.Request) -> web.Response:
    tenant = request[TENANT]
    body = await json_body(request)
    limit = request.config_dict[SETTINGS].tenant_max_commands_in_flight
    async with tenant_connection(request) as conn, conn.transaction():
        try:
            change = await apply_config(conn, tenant.id, body, in_flight_limit=limit)
        except ConfigError as exc:
            raise field_errors(
                [(e.field, e.message) for e in exc.errors], "the config is not valid"
            ) from None
    config, version, command_id = change.config, change.version, change.command_id
    if command_id is None:
        return web.json_response({"config": config, "config_version": version, "changed": False})
    request.config_dict[AFTER_COMMIT].submit([change.message])
    log.info("bot config accepted", config_version=version, command_id=str(command_id))
    return web.json_response(
        {
            "command_id": str(command_id),
            "status": "queued",
            "config": config,
            "config_version": version,
            "changed": True,
        },
        status=202,
    )


def setup_bot(bot_app: web.Application) -> None:
    """Routes of the sub-app mounted at /api/v1/bot."""
    router = bot_app.router
    router.add_post("/{action:start|stop|restart}", bot_command)
    router.add_get("/status", bot_status)
    router.add_get("/config", get_config)
    router.add_put("/config", put_config)


def setup_commands(commands_app: web.Application) -> None:
    """Routes of the sub-app mounted at /api/v1/commands."""
    commands_app.router.add_get("/{command_id}", get_command)
