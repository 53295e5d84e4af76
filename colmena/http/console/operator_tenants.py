"""Tenants and their bots: a list with each bot's state and health; a tenant's page with its
plan, restarts, crashloop, recent commands and plan changes and its live log; start, stop,
restart, reset a crashloop, change the plan.

The ingress holds no Docker client: a command is the tenant API's (desired state and a queued
command, its message in the same audited transaction), a crashloop reset is `colmena bots
reset` (restart history cleared, a reconcile queued), and a plan change is an `apply_plan`
message, the way a paid plan arrives, whose source names the admin: the actor applies it by the
same rules (config fitted, a bot over the new plan's capital stopped) and `plan_changes` keeps
who asked. A plan moves what a tenant pays for, so it asks for a confirmation first.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from colmena.domain.tenants import TENANT_ID, capital_over_plan
from colmena.http.console.core import (
    VIEWER,
    HtmlError,
    confirmation,
    form,
    see_other,
    translate,
)
from colmena.http.console.live_logs import live_log_stream, recent_log
from colmena.http.console.operator_common import (
    ADMIN,
    PAGE_SIZE,
    audited,
    choice,
    connection,
    page_of,
    publish,
    record,
    show,
    text_cursor,
)
from colmena.store import console_queries as queries
from colmena.store import outbox
from colmena.store import tenants as store

STATES = ("running", "stopped", "starting", "exited", "unhealthy", "crashloop")
COMMANDS = ("start", "stop", "restart")
BOTS_QUEUE = "bots"


def _tenant_id(request: web.Request) -> str:
    tenant_id = request.match_info["tenant_id"]
    if not TENANT_ID.fullmatch(tenant_id):  # cannot exist (and may not reach SQL: NUL)
        raise HtmlError(404, "No such tenant")
    return tenant_id


def _tenant_path(tenant_id: str) -> str:
    return f"{ADMIN}/tenants/{tenant_id}"


async def tenants_list(request: web.Request) -> web.Response:
    state = choice(request, "state", STATES)
    async with connection(request) as conn:
        rows = await queries.list_tenants(
            conn, state=state, after_id=text_cursor(request), limit=PAGE_SIZE
        )
    return show(
        request,
        "tenants.html",
        {"page": page_of(rows, lambda row: row.id), "state": state or "", "states": STATES},
    )


async def tenant_page(request: web.Request) -> web.Response:
    tenant_id = _tenant_id(request)
    async with connection(request) as conn:
        tenant = await store.get_tenant(conn, tenant_id)
        if tenant is None:
            raise HtmlError(404, "No such tenant")
        bot = await store.get_bot(conn, tenant_id)
        plans = await store.list_plans(conn)
        commands = await queries.recent_commands(conn, tenant_id)
        changes = await queries.recent_plan_changes(conn, tenant_id)
    tail = await recent_log(request, tenant_id)
    return show(
        request,
        "tenant.html",
        {
            "tenant": tenant,
            "bot": bot,
            "plans": plans,
            "commands": commands,
            "changes": changes,
            "tail": tail,
            "stream_url": f"{_tenant_path(tenant_id)}/logs/stream",
            "refresh_url": _tenant_path(tenant_id) + "#live-logs-title",
        },
    )


async def log_stream(request: web.Request) -> web.StreamResponse:
    tenant_id = _tenant_id(request)
    async with connection(request) as conn:
        if await store.get_tenant(conn, tenant_id) is None:
            raise HtmlError(404, "No such tenant")
    return await live_log_stream(request, tenant_id)


async def command(request: web.Request) -> web.Response:
    tenant_id = _tenant_id(request)
    kind = request.match_info["command"]
    if kind not in COMMANDS:
        raise HtmlError(404, "No such command")
    await form(request)
    async with audited(request) as conn:
        bot = await store.get_bot(conn, tenant_id, for_update=True)
        if bot is None:
            raise HtmlError(404, "No such tenant")
        if kind != "stop":
            over = capital_over_plan(bot.config, bot.plan.limits())
            if over is not None:
                raise HtmlError(
                    409, "The bot's capital is over its plan: it cannot start until it fits"
                )
        desired = "stopped" if kind == "stop" else "running"
        await store.set_desired(conn, tenant_id, desired, reset_restarts=kind != "stop")
        command_id, row = await store.record_command(conn, tenant_id, kind, requested_by="admin")
        await record(
            conn,
            request,
            action=f"bot.{kind}",
            subject_kind="tenant",
            subject_id=tenant_id,
            before={"desired": bot.desired},
            after={"command_id": str(command_id)},
        )
    publish(request, [row])
    notice = translate(request, "Command queued: {kind}").format(kind=translate(request, kind))
    return see_other(request, _tenant_path(tenant_id), notice=notice)


async def reset_crashloop(request: web.Request) -> web.Response:
    tenant_id = _tenant_id(request)
    await form(request)
    async with audited(request) as conn:
        if not await store.reset_restarts(conn, tenant_id):
            raise HtmlError(404, "No such tenant")
        row = await store.record_reconcile(conn, tenant_id)
        await record(conn, request, action="bot.reset", subject_kind="tenant", subject_id=tenant_id)
    publish(request, [row])
    return see_other(
        request,
        _tenant_path(tenant_id),
        notice=translate(request, "Restart history cleared; a reconcile is queued"),
    )


async def change_plan(request: web.Request) -> web.Response:
    tenant_id = _tenant_id(request)
    posted = await form(request)
    plan = posted.get("plan", "")
    async with connection(request) as conn:
        tenant = await store.get_tenant(conn, tenant_id)
        if tenant is None:
            raise HtmlError(404, "No such tenant")
        if len(plan) > 64 or await store.get_plan(conn, plan) is None:
            raise HtmlError(400, "No such plan")
    if plan == tenant.plan:
        return see_other(
            request, _tenant_path(tenant_id), notice=translate(request, "The plan is unchanged")
        )
    asked = confirmation(
        request,
        posted,
        message=translate(request, "Move tenant {tenant} from plan {old} to plan {new}?").format(
            tenant=tenant_id, old=tenant.plan, new=plan
        ),
        cancel_to=_tenant_path(tenant_id),
    )
    if asked is not None:
        return asked
    source = f"console:{request[VIEWER].audit_actor}"
    async with audited(request) as conn:
        row = await outbox.record(
            conn,
            queue=BOTS_QUEUE,
            actor="apply_plan",
            args=[tenant_id, plan, True, source, datetime.now(UTC).isoformat()],
        )
        await record(
            conn,
            request,
            action="tenant.plan_change",
            subject_kind="tenant",
            subject_id=tenant_id,
            before={"plan": tenant.plan},
            after={"plan": plan},
        )
    publish(request, [row])
    return see_other(
        request,
        _tenant_path(tenant_id),
        notice=translate(request, "Plan change queued: the bots worker applies it"),
    )
