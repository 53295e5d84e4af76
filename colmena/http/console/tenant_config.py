"""The tenant's bot config editor (`/console/tenant/config`).

One labelled field per key of the config model (`colmena.domain.tenants.BotConfig`): symbols,
mode, capital. A save takes the API's path (`tenant_api.apply_config`, what `PUT
/api/v1/bot/config` runs): the same model and plan checks, the same new version and configure
command, in one transaction attributed to the tenant. A config that fails them is shown again
with each problem next to its field, and the transaction rolls back: nothing changed.
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from aiohttp import web

from colmena.domain.tenants import ConfigError
from colmena.http.console.core import VIEWER, HtmlError, form, render, see_other, translate
from colmena.http.console.tenant_common import (
    URL,
    connection,
    plain,
    refusal,
    route,
    session_tenant,
)
from colmena.http.context import SETTINGS
from colmena.http.errors import ApiError
from colmena.http.publishing import AFTER_COMMIT
from colmena.http.tenant_api import apply_config
from colmena.http.tenant_limits import tenant_connection
from colmena.store import audit
from colmena.store import tenants as store

log = structlog.get_logger(__name__)

PAGE = f"{URL}/config"
TEMPLATE = "console/tenant/config.html"
FIELDS = ("symbols", "mode", "capital")
_SEPARATORS = re.compile(r"[\s,]+")


def config_from_form(values: dict[str, str]) -> dict[str, Any]:
    """The config the form's fields say: symbols separated by commas, spaces or lines."""
    return {
        "symbols": [symbol for symbol in _SEPARATORS.split(values["symbols"]) if symbol],
        "mode": values["mode"],
        "capital": values["capital"].strip(),
    }


def form_values(config: dict[str, Any]) -> dict[str, str]:
    """A stored config as the form's fields show it."""
    return {
        "symbols": "\n".join(config.get("symbols") or []),
        "mode": str(config.get("mode", "")),
        "capital": str(config.get("capital", "")),
    }


def errors_by_field(request: web.Request, exc: ConfigError) -> dict[str, list[str]]:
    """Each problem under the form field it belongs to ("symbols.2" is the symbols field)."""
    errors: dict[str, list[str]] = {}
    for error in exc.errors:
        field = error.field.split(".")[0]
        where = field if field in FIELDS else "form"
        message = translate(request, error.message)
        if field == "symbols" and "." in error.field:
            position = int(error.field.split(".")[1]) + 1
            message = translate(request, "Symbol {n}: {problem}").format(
                n=position, problem=message
            )
        errors.setdefault(where, []).append(message)
    return errors


async def _page(
    request: web.Request,
    tenant_id: str,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, list[str]] | None = None,
    status: int = 200,
) -> web.Response:
    async with connection(request) as conn:
        bot = await store.get_bot(conn, tenant_id)
    if bot is None:
        raise HtmlError(404, translate(request, "Your tenant no longer exists."))
    context = {
        "values": values if values is not None else form_values(bot.config),
        "errors": errors or {},
        "plan": bot.plan,
        "max_capital": plain(bot.plan.max_capital),
        "config_version": bot.config_version,
    }
    return render(request, TEMPLATE, context, status=status)


async def show(request: web.Request) -> web.Response:
    return await _page(request, session_tenant(request))


async def save(request: web.Request) -> web.Response:
    tenant_id = session_tenant(request)
    posted = await form(request)
    values = {name: posted.get(name, "") for name in FIELDS}
    limit = request.config_dict[SETTINGS].tenant_max_commands_in_flight
    try:
        async with tenant_connection(request) as conn, conn.transaction():
            await audit.attribute(conn, actor=request[VIEWER].audit_actor, cause="console")
            change = await apply_config(
                conn, tenant_id, config_from_form(values), in_flight_limit=limit
            )
    except ConfigError as exc:
        return await _page(
            request, tenant_id, values=values, errors=errors_by_field(request, exc), status=422
        )
    except ApiError as exc:
        errors = {"form": [refusal(request, exc)]}
        return await _page(request, tenant_id, values=values, errors=errors, status=exc.status_code)
    if change.command_id is None:
        return see_other(
            request, PAGE, notice=translate(request, "Nothing changed: the bot has this config.")
        )
    request.config_dict[AFTER_COMMIT].submit([change.message])
    log.info(
        "bot config accepted",
        config_version=change.version,
        command_id=str(change.command_id),
        via="console",
    )
    notice = translate(request, "Config saved as version {version}; the bot takes it shortly.")
    return see_other(request, PAGE, notice=notice.format(version=change.version))


def register(console: web.Application) -> None:
    console.router.add_get(route(PAGE), show, name="tenant-config")
    console.router.add_post(route(PAGE), save)
