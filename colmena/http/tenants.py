"""The tenant API (`/api/v1/bot`, `/api/v1/commands`, `/api/v1/keys`) and the admin bot routes.

Every tenant route needs `Authorization: Bearer <token>`; only the token's SHA-256 is stored,
looked up by digest and compared in constant time. A tenant reaches only its own resources:
another tenant's command id is a 404, exactly like an id that does not exist.

Commands change the desired state in the request's transaction (so a tenant's commands take
effect in the order they were accepted), record a queued command and its outbox message, and
answer 202 with the command id; the `bots` actors converge the runtime and finish the command.
Provider keys are encrypted before they touch the database and never come back out: listing
shows the provider and the last four characters. Nothing here logs a token or a key.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import uuid
from collections import defaultdict
from contextlib import aclosing
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from colmena.actors.bots import runtime_of
from colmena.config import SettingsError
from colmena.config.metrics import BOTS, SECURITY_EVENTS
from colmena.domain.tenants import (
    PROVIDER,
    TENANT_ID,
    ConfigError,
    PlanLimits,
    looks_like_token,
    token_digest,
    validate_config,
)
from colmena.http.context import RESOURCES, SETTINGS
from colmena.http.errors import ApiError
from colmena.http.health import GAUGE_REFRESHERS
from colmena.http.publishing import publish_in_background
from colmena.store import tenants as store
from colmena.supervisor.keys import newest_key_version, secret_box
from colmena.supervisor.runtime import BotNotFound, follow_logs_async
from colmena.supervisor.secrets import mask_last4

log = structlog.get_logger(__name__)

PREFIX = "/api/v1"
MAX_TAIL = 1000
MAX_KEY_CHARS = 4096
BOT_STATES = ("running", "unhealthy", "backoff", "crashloop", "stopped", "unknown")
LOG_STREAMS = web.AppKey("bot_log_streams", defaultdict)


def _unauthorized(reason: str, message: str) -> ApiError:
    SECURITY_EVENTS.labels(reason=reason).inc()
    log.warning("security: tenant request refused", reason=reason)
    return ApiError(
        401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="colmena"'}
    )


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def authenticate(request: web.Request) -> store.Tenant:
    token = _bearer(request)
    if token is None:
        raise _unauthorized("tenant_token_missing", "send Authorization: Bearer <your API token>")
    digest = token_digest(token)
    found = None
    if looks_like_token(token):
        async with request.app[RESOURCES].pool.acquire() as conn:
            found = await store.tenant_by_token(conn, digest)
    if found is None or not hmac.compare_digest(found[1], digest):
        raise _unauthorized("tenant_token_invalid", "the API token is not valid")
    tenant = found[0]
    structlog.contextvars.bind_contextvars(tenant_id=tenant.id)
    return tenant


def authenticate_admin(request: web.Request) -> None:
    configured = request.app[SETTINGS].bot_admin_token
    if configured is None:
        raise ApiError(503, "not_configured", "COLMENA_BOT_ADMIN_TOKEN is not set on this server")
    token = _bearer(request) or ""
    if not hmac.compare_digest(token_digest(token), token_digest(configured.get_secret_value())):
        SECURITY_EVENTS.labels(reason="admin_token_invalid").inc()
        log.warning("security: admin request refused")
        raise ApiError(
            401,
            "unauthorized",
            "admin token missing or not valid",
            headers={"WWW-Authenticate": 'Bearer realm="colmena-admin"'},
        )


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (
        json.JSONDecodeError,
        UnicodeDecodeError,
        RecursionError,
    ):  # RecursionError: nested too deep
        raise ApiError(400, "invalid_json", "the body is not JSON") from None


def _field_errors(errors: list[tuple[str, str]], message: str) -> ApiError:
    return ApiError(
        422, "invalid_fields", message, fields=[{"field": f, "message": m} for f, m in errors]
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# Commands -------------------------------------------------------------------------------------


async def _command(
    request: web.Request, tenant_id: str, kind: str, *, requested_by: str
) -> web.Response:
    desired = "stopped" if kind == "stop" else "running"
    async with request.app[RESOURCES].pool.acquire() as conn, conn.transaction():
        await store.set_desired(conn, tenant_id, desired, reset_restarts=kind != "stop")
        command_id, row = await store.record_command(
            conn, tenant_id, kind, requested_by=requested_by
        )
    publish_in_background(request.app, [row])
    log.info(
        "bot command accepted", kind=kind, command_id=str(command_id), requested_by=requested_by
    )
    return web.json_response({"command_id": str(command_id), "status": "queued"}, status=202)


async def bot_command(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    return await _command(request, tenant.id, request.match_info["action"], requested_by="tenant")


async def get_command(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    try:
        command_id = uuid.UUID(request.match_info["command_id"])
    except ValueError:
        raise ApiError(404, "not_found", "no such command") from None
    async with request.app[RESOURCES].pool.acquire() as conn:
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
            "created_at": _iso(command.created_at),
            "finished_at": _iso(command.finished_at),
        }
    )


def _bot_view(bot: store.BotRow) -> dict[str, Any]:
    return {
        "tenant": bot.tenant_id,
        "plan": bot.plan.name,
        "desired": bot.desired,
        "actual": bot.observed,
        "healthy": bot.healthy,
        "observed_at": _iso(bot.observed_at),
        "config_version": bot.config_version,
        "restarts": bot.restarts_total,
        "crashloop": bot.crashloop,
        "crashloop_reason": bot.crashloop_reason,
        "next_restart_at": _iso(bot.next_restart_at),
        "last_exit_code": bot.last_exit_code,
    }


async def bot_status(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    async with request.app[RESOURCES].pool.acquire() as conn:
        bot = await store.get_bot(conn, tenant.id)
    assert bot is not None  # every tenant has a bots row from creation
    return web.json_response(_bot_view(bot))


# Config ---------------------------------------------------------------------------------------


async def get_config(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    async with request.app[RESOURCES].pool.acquire() as conn:
        bot = await store.get_bot(conn, tenant.id)
    assert bot is not None
    limits = {"max_symbols": bot.plan.max_symbols, "live_allowed": bot.plan.live_allowed}
    return web.json_response(
        {
            "config": bot.config,
            "config_version": bot.config_version,
            "plan": bot.plan.name,
            "limits": limits,
        }
    )


async def put_config(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    body = await _json_body(request)
    async with request.app[RESOURCES].pool.acquire() as conn, conn.transaction():
        # Tenant row first (as apply_plan does): the plan cannot change under the validation.
        current = await store.get_tenant(conn, tenant.id, for_update=True)
        assert current is not None
        bot = await store.get_bot(conn, tenant.id, for_update=True)
        assert bot is not None
        try:
            config = validate_config(
                body, bot.plan.name, PlanLimits(bot.plan.max_symbols, bot.plan.live_allowed)
            )
        except ConfigError as exc:
            raise _field_errors(
                [(e.field, e.message) for e in exc.errors], "the config is not valid"
            ) from None
        version = await store.set_config(conn, tenant.id, config)
        if version == bot.config_version:
            return web.json_response(
                {"config": config, "config_version": version, "changed": False}
            )
        await store.reset_restarts(conn, tenant.id)
        command_id, row = await store.record_command(
            conn, tenant.id, "configure", requested_by="tenant"
        )
    publish_in_background(request.app, [row])
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


# Logs -----------------------------------------------------------------------------------------


def _tail(request: web.Request, default: int) -> int:
    raw = request.query.get("tail", str(default))
    if not (raw.isascii() and raw.isdigit()) or not 0 <= int(raw) <= MAX_TAIL:
        raise _field_errors([("tail", f"an integer from 0 to {MAX_TAIL}")], "tail is not valid")
    return int(raw)


async def _runtime(request: web.Request) -> Any:
    try:
        return await runtime_of(request.app[SETTINGS])
    except SettingsError as exc:
        log.error("bot runtime unavailable", error=str(exc))
        raise ApiError(503, "runtime_unavailable", "bot logs are unavailable right now") from None


async def bot_logs(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    tail = _tail(request, 100)
    runtime = await _runtime(request)
    try:
        lines = await asyncio.to_thread(runtime.logs, tenant.id, tail)
    except BotNotFound:
        raise ApiError(404, "no_bot", "the bot is not running and has no logs") from None
    return web.json_response({"lines": lines})


async def bot_log_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events, one `data:` per log line, `: keepalive` comments while quiet.

    Ends when the bot's log ends (the bot stopped), after COLMENA_BOT_SSE_MAX_SECONDS, or when
    the client goes (a write fails or the handler is cancelled): the log stream is closed then,
    which also releases the thread waiting for the next line.
    """
    tenant = await authenticate(request)
    settings = request.app[SETTINGS]
    tail = _tail(request, 0)
    streams = request.app[LOG_STREAMS]
    if streams[tenant.id] >= settings.bot_sse_max_streams_per_tenant:
        raise ApiError(
            429,
            "too_many_streams",
            f"at most {settings.bot_sse_max_streams_per_tenant} log streams at once",
        )
    runtime = await _runtime(request)
    try:
        stream = await asyncio.to_thread(runtime.follow_logs, tenant.id, tail)
    except BotNotFound:
        raise ApiError(404, "no_bot", "the bot is not running and has no logs") from None
    streams[tenant.id] += 1
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    try:
        await response.prepare(request)
        await _pump(
            response,
            follow_logs_async(stream),
            settings.bot_sse_keepalive_seconds,
            settings.bot_sse_max_seconds,
        )
    except ConnectionError:
        log.info("log stream client went away")
    finally:
        stream.close()
        streams[tenant.id] -= 1
        if not streams[tenant.id]:
            del streams[tenant.id]
    return response


async def _pump(
    response: web.StreamResponse, source: Any, keepalive_s: float, max_s: float
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_s
    async with aclosing(source) as lines:
        pending: asyncio.Future[str] | None = None
        try:
            while (left := deadline - loop.time()) > 0:
                if pending is None:
                    pending = asyncio.ensure_future(anext(lines))
                done, _ = await asyncio.wait({pending}, timeout=min(keepalive_s, left))
                if not done:
                    await response.write(b": keepalive\n\n")
                    continue
                finished, pending = pending, None
                try:
                    line = finished.result()
                except StopAsyncIteration:
                    await response.write(b"event: end\ndata: the bot's log ended\n\n")
                    return
                await response.write(b"data: " + line.replace("\r", "").encode() + b"\n\n")
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)


# Provider keys --------------------------------------------------------------------------------


async def put_key(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise _field_errors(
            [("body", "expected an object with provider and key")], "the key is not valid"
        )
    provider, key = body.get("provider"), body.get("key")
    errors = []
    if not isinstance(provider, str) or not PROVIDER.fullmatch(provider):
        errors.append(
            ("provider", "lower-case letters, digits and _, 2 to 32 characters, e.g. binance")
        )
    if (
        not isinstance(key, str)
        or not 8 <= len(key) <= MAX_KEY_CHARS
        or not key.isprintable()
        or key != key.strip()
    ):
        errors.append(
            (
                "key",
                f"a printable string of 8 to {MAX_KEY_CHARS} characters without surrounding spaces",
            )
        )
    unknown = sorted(set(body) - {"provider", "key"})
    if unknown:
        errors.append((unknown[0], "unknown field"))
    if errors or not isinstance(key, str) or not isinstance(provider, str):
        raise _field_errors(errors, "the key is not valid")
    settings = request.app[SETTINGS]
    try:
        box, version = secret_box(settings), newest_key_version(settings)
    except SettingsError as exc:
        log.error("provider keys cannot be stored", error=str(exc))
        raise ApiError(503, "not_configured", "provider keys cannot be stored right now") from None
    ciphertext = box.encrypt(key)
    async with request.app[RESOURCES].pool.acquire() as conn:
        await store.put_key(
            conn,
            tenant.id,
            provider,
            ciphertext=ciphertext,
            last4=mask_last4(key),
            key_version=version,
        )
    log.info("provider key stored", provider=provider)
    return web.json_response({"provider": provider, "last4": mask_last4(key)}, status=201)


async def list_keys(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    async with request.app[RESOURCES].pool.acquire() as conn:
        keys = await store.list_keys(conn, tenant.id)
    return web.json_response(
        {
            "keys": [
                {"provider": k.provider, "last4": k.last4, "updated_at": _iso(k.updated_at)}
                for k in keys
            ]
        }
    )


async def delete_key(request: web.Request) -> web.Response:
    tenant = await authenticate(request)
    provider = request.match_info["provider"]
    deleted = False
    if PROVIDER.fullmatch(
        provider
    ):  # any other name cannot have a key (and may not reach SQL: NUL)
        async with request.app[RESOURCES].pool.acquire() as conn:
            deleted = await store.delete_key(conn, tenant.id, provider)
    if not deleted:
        raise ApiError(404, "not_found", "no key for that provider")
    log.info("provider key deleted", provider=provider)
    return web.Response(status=204)


# Admin ----------------------------------------------------------------------------------------


async def admin_bots(request: web.Request) -> web.Response:
    authenticate_admin(request)
    async with request.app[RESOURCES].pool.acquire() as conn:
        bots = await store.list_bots(conn)
    return web.json_response({"bots": [_bot_view(bot) for bot in bots]})


async def admin_stop(request: web.Request) -> web.Response:
    authenticate_admin(request)
    tenant_id = request.match_info["tenant"]
    if not TENANT_ID.fullmatch(tenant_id):  # cannot exist (and may not reach SQL: NUL)
        raise ApiError(404, "not_found", "no such tenant")
    async with request.app[RESOURCES].pool.acquire() as conn:
        if await store.get_tenant(conn, tenant_id) is None:
            raise ApiError(404, "not_found", "no such tenant")
    return await _command(request, tenant_id, "stop", requested_by="admin")


async def refresh_bot_gauges(app: web.Application) -> None:
    async with app[RESOURCES].pool.acquire() as conn:
        counts = await store.state_counts(conn)
    for state in BOT_STATES:
        BOTS.labels(state=state).set(counts.get(state, 0))


def setup(app: web.Application) -> None:
    app[GAUGE_REFRESHERS].append(refresh_bot_gauges)
    app[LOG_STREAMS] = defaultdict(int)
    router = app.router
    router.add_post(PREFIX + "/bot/{action:start|stop|restart}", bot_command)
    router.add_get(PREFIX + "/bot/status", bot_status)
    router.add_get(PREFIX + "/bot/config", get_config)
    router.add_put(PREFIX + "/bot/config", put_config)
    router.add_get(PREFIX + "/bot/logs", bot_logs)
    router.add_get(PREFIX + "/bot/logs/stream", bot_log_stream)
    router.add_get(PREFIX + "/commands/{command_id}", get_command)
    router.add_post(PREFIX + "/keys", put_key)
    router.add_get(PREFIX + "/keys", list_keys)
    router.add_delete(PREFIX + "/keys/{provider}", delete_key)
    router.add_get(PREFIX + "/admin/bots", admin_bots)
    router.add_post(PREFIX + "/admin/bots/{tenant}/stop", admin_stop)
