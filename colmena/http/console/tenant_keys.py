"""The tenant's provider keys (`/console/tenant/keys`): listed masked, added, replaced, removed.

The API's path throughout (`colmena.http.tenant_keys`): the same input rules, the key sealed to
the supervisor's public key at once and stored as a pending row with the outbox message that
has a bots worker take it in, in one transaction attributed to the tenant; removing is
`provider_keys.delete_key`. The ingress keeps nothing it could open. A key is typed into a
password field, never put back into a page (a form with a problem comes back with the field
empty), and never logged. Replacing asks for a ticked confirmation on the replace page (so the
key itself never travels through a confirmation page); removing asks on a confirmation page.
Key writes of one tenant are bounded per process as the API's are
(COLMENA_TENANT_MAX_KEY_WRITES).
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from colmena.domain.key_sealing import seal
from colmena.domain.tenants import PROVIDER, mask_last4
from colmena.http import tenant_keys as api
from colmena.http.console.core import (
    VIEWER,
    HtmlError,
    confirmation,
    form,
    render,
    see_other,
    translate,
)
from colmena.http.console.tenant_common import URL, connection, refusal, route, session_tenant
from colmena.http.context import SETTINGS
from colmena.http.errors import ApiError
from colmena.http.publishing import AFTER_COMMIT
from colmena.http.tenant_limits import TenantSlots, held, tenant_connection
from colmena.store import audit
from colmena.store import provider_keys as store
from colmena.store.provider_keys import KeyView

log = structlog.get_logger(__name__)

PAGE = f"{URL}/keys"
TEMPLATE = "console/tenant/keys.html"
KEY_WRITES = web.AppKey("console_key_writes", TenantSlots)


async def _keys(request: web.Request, tenant_id: str) -> list[KeyView]:
    async with connection(request) as conn:
        return await store.list_keys(conn, tenant_id)


def _known_provider(request: web.Request) -> str:
    provider = request.match_info["provider"]
    if not PROVIDER.fullmatch(provider):  # no key can have that name (and it may not reach SQL)
        raise HtmlError(404, translate(request, "No key for that provider."))
    return provider


async def _page(
    request: web.Request,
    tenant_id: str,
    *,
    provider: str = "",
    errors: dict[str, list[str]] | None = None,
    status: int = 200,
) -> web.Response:
    context: dict[str, Any] = {
        "keys": await _keys(request, tenant_id),
        "provider": provider,
        "errors": errors or {},
    }
    return render(request, TEMPLATE, context, status=status)


async def show(request: web.Request) -> web.Response:
    return await _page(request, session_tenant(request))


def _input_errors(request: web.Request, exc: ApiError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for item in exc.extra.get("fields", []):
        field = item["field"] if item["field"] in ("provider", "key") else "form"
        errors.setdefault(field, []).append(translate(request, item["message"]))
    return errors


async def add(request: web.Request) -> web.Response:
    """Add a key, or replace one when the replace page's confirmation is ticked."""
    tenant_id = session_tenant(request)
    posted = await form(request)
    provider = posted.get("provider", "")
    limit = request.config_dict[SETTINGS].tenant_max_key_writes
    try:
        with held(
            request.config_dict[KEY_WRITES],
            tenant_id,
            limit,
            code="too_many_key_writes",
            what="key writes",
        ):
            provider, key = api.key_input({"provider": provider, "key": posted.get("key", "")})
            existing = {k.provider: k for k in await _keys(request, tenant_id)}
            if provider in existing and posted.get("confirmed") != "yes":
                message = translate(
                    request, "{provider} already has a key ({last4}): replace it from its row."
                ).format(provider=provider, last4=existing[provider].last4)
                return await _page(
                    request,
                    tenant_id,
                    provider=provider,
                    errors={"provider": [message]},
                    status=409,
                )
            public_key = api.supervisor_public_key(request)
            last4 = mask_last4(key)
            sealed = seal(public_key, key, tenant_id=tenant_id, provider=provider)
            async with tenant_connection(request) as conn, conn.transaction():
                await audit.attribute(conn, actor=request[VIEWER].audit_actor, cause="console")
                row = await store.put_pending(conn, tenant_id, provider, sealed=sealed, last4=last4)
    except ApiError as exc:
        if exc.code == "invalid_fields":
            errors = _input_errors(request, exc)
        else:
            errors = {"form": [refusal(request, exc)]}
        status = exc.status_code
        return await _page(request, tenant_id, provider=provider, errors=errors, status=status)
    request.config_dict[AFTER_COMMIT].submit([row])
    log.info("provider key stored", provider=provider, sealed_for="supervisor", via="console")
    notice = translate(request, "The {provider} key ({last4}) is stored.")
    return see_other(request, PAGE, notice=notice.format(provider=provider, last4=last4))


async def replace_form(request: web.Request) -> web.Response:
    tenant_id = session_tenant(request)
    provider = _known_provider(request)
    key = next((k for k in await _keys(request, tenant_id) if k.provider == provider), None)
    if key is None:
        raise HtmlError(404, translate(request, "No key for that provider."))
    return render(request, "console/tenant/key_replace.html", {"key": key})


async def remove(request: web.Request) -> web.Response:
    tenant_id = session_tenant(request)
    provider = _known_provider(request)
    posted = await form(request)
    key = next((k for k in await _keys(request, tenant_id) if k.provider == provider), None)
    if key is None:
        raise HtmlError(404, translate(request, "No key for that provider."))
    message = translate(
        request, "Remove the {provider} key ({last4})? A running bot loses it."
    ).format(provider=provider, last4=key.last4)
    asked = confirmation(request, posted, message=message, cancel_to=PAGE)
    if asked is not None:
        return asked
    limit = request.config_dict[SETTINGS].tenant_max_key_writes
    try:
        with held(
            request.config_dict[KEY_WRITES],
            tenant_id,
            limit,
            code="too_many_key_writes",
            what="key writes",
        ):
            async with tenant_connection(request) as conn, conn.transaction():
                await audit.attribute(conn, actor=request[VIEWER].audit_actor, cause="console")
                deleted, delivery = await store.delete_key(conn, tenant_id, provider)
    except ApiError as exc:
        return await _page(
            request, tenant_id, errors={"form": [refusal(request, exc)]}, status=exc.status_code
        )
    if not deleted:
        raise HtmlError(404, translate(request, "No key for that provider."))
    request.config_dict[AFTER_COMMIT].submit([delivery])
    log.info("provider key deleted", provider=provider, via="console")
    notice = translate(request, "The {provider} key is removed.").format(provider=provider)
    return see_other(request, PAGE, notice=notice)


def register(console: web.Application) -> None:
    console[KEY_WRITES] = TenantSlots()
    router = console.router
    router.add_get(route(PAGE), show, name="tenant-keys")
    router.add_post(route(PAGE), add)
    router.add_get(route(PAGE + "/{provider}/replace"), replace_form, name="tenant-key-replace")
    router.add_post(route(PAGE + "/{provider}/remove"), remove, name="tenant-key-remove")
