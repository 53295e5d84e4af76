"""The tenant's notifications (`/api/v1/notifications`): where its bot's events go, and how they
went.

A tenant registers one Telegram chat (colmena's own bot sends to it) and one webhook URL. A
webhook's signing secret (`whsec_...`) is made here, answered once, in the PUT that sets the
URL (every PUT makes a new one), and stored only sealed to the supervisor side's X25519 key, as
provider keys are: the ingress holds no key that opens it, the notifications workers do. A URL
must be https (COLMENA_NOTIFY_ALLOW_HTTP for development) and an IP literal or `localhost`
outside COLMENA_NOTIFY_ALLOWED_NETWORKS is refused with 403 and a security log line; host names
are not resolved here (the answer could change later), the workers check every address they
connect to.

Deliveries are listed newest first, a page at a time (`next_cursor` is the last id of the page),
and a dead one can be replayed (202). Another tenant's delivery is a 404, like one that does not
exist.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import structlog
from aiohttp import web

from colmena.config.metrics import SECURITY_EVENTS
from colmena.domain.key_sealing import seal
from colmena.domain.notifications import (
    DELIVERY_STATES,
    SECRET_SEAL_LABEL,
    RegistrationError,
    chat_for_api,
    check_chat_id,
    check_webhook_url,
)
from colmena.gateways.tenant_webhooks import new_secret
from colmena.http.context import SETTINGS
from colmena.http.errors import ApiError
from colmena.http.payloads import bad_parameter, field_errors, iso, json_body, query_params
from colmena.http.publishing import AFTER_COMMIT
from colmena.http.tenant_auth import TENANT
from colmena.http.tenant_keys import supervisor_public_key
from colmena.http.tenant_limits import tenant_connection
from colmena.store import audit
from colmena.store import notifications as store

log = structlog.get_logger(__name__)

DEFAULT_PAGE = 50
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_UUID = re.compile(UUID_PATTERN)


def _one_field(body: Any, name: str) -> Any:
    """The value of the body's only field `name`, or 422 naming what is wrong."""
    if not isinstance(body, dict):
        raise field_errors([("body", f"expected an object with {name}")], f"{name} is not valid")
    unknown = sorted(set(body) - {name})
    if unknown:
        raise field_errors([(unknown[0], "unknown field")], f"{name} is not valid")
    if name not in body:
        raise field_errors([(name, "required")], f"{name} is not valid")
    return body[name]


def _refused(exc: RegistrationError) -> ApiError:
    if exc.forbidden:
        SECURITY_EVENTS.labels(reason="notify_destination_refused").inc()
        log.warning("security: webhook destination refused", reason=exc.message)
        return ApiError(403, "destination_refused", exc.message)
    return field_errors([(exc.field, exc.message)], f"{exc.field} is not valid")


def _endpoint_view(endpoint: store.Endpoint) -> dict[str, Any]:
    view: dict[str, Any] = (
        {"chat_id": chat_for_api(endpoint.target)}
        if endpoint.kind == "telegram"
        else {"url": endpoint.target}
    )
    return {**view, "created_at": iso(endpoint.created_at), "updated_at": iso(endpoint.updated_at)}


def _delivery_view(delivery: store.Delivery) -> dict[str, Any]:
    return {
        "id": str(delivery.id),
        "event_id": str(delivery.event_id),
        "event": delivery.event_kind,
        "channel": delivery.channel,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "replays": delivery.replays,
        "next_attempt_at": iso(delivery.next_attempt_at) if delivery.status == "pending" else None,
        "last_error": delivery.last_error,
        "last_status": delivery.last_status,
        "created_at": iso(delivery.created_at),
        "finished_at": iso(delivery.finished_at),
    }


async def list_endpoints(request: web.Request) -> web.Response:
    async with tenant_connection(request) as conn:
        found = {e.kind: e for e in await store.endpoints(conn, request[TENANT].id)}
    return web.json_response(
        {
            kind: _endpoint_view(found[kind]) if kind in found else None
            for kind in ("telegram", "webhook")
        }
    )


async def put_telegram(request: web.Request) -> web.Response:
    try:
        chat = check_chat_id(_one_field(await json_body(request), "chat_id"))
    except RegistrationError as exc:
        raise _refused(exc) from None
    async with tenant_connection(request) as conn:
        endpoint = await store.put_endpoint(conn, request[TENANT].id, "telegram", chat)
    log.info("telegram chat registered for notifications")
    return web.json_response(_endpoint_view(endpoint))


async def put_webhook(request: web.Request) -> web.Response:
    settings = request.config_dict[SETTINGS]
    tenant = request[TENANT]
    try:
        url = check_webhook_url(
            _one_field(await json_body(request), "url"),
            allow_http=settings.notify_allow_http,
            allowed=settings.notify_networks(),
        )
    except RegistrationError as exc:
        raise _refused(exc) from None
    secret = new_secret()
    sealed = seal(
        supervisor_public_key(
            request,
            sealing="webhook secrets",
            refusal="webhooks cannot be registered right now",
        ),
        secret,
        tenant_id=tenant.id,
        provider=SECRET_SEAL_LABEL,
    )
    async with tenant_connection(request) as conn:
        endpoint = await store.put_endpoint(conn, tenant.id, "webhook", url, sealed_secret=sealed)
    log.info("webhook registered for notifications", sealed_for="supervisor")
    return web.json_response({**_endpoint_view(endpoint), "secret": secret})


async def _delete(request: web.Request, kind: str) -> web.Response:
    async with tenant_connection(request) as conn, conn.transaction():
        deleted = await store.delete_endpoint(conn, request[TENANT].id, kind)
    if not deleted:
        raise ApiError(404, "not_found", f"no {kind} is registered")
    log.info("notification endpoint removed", kind=kind)
    return web.Response(status=204)


async def delete_telegram(request: web.Request) -> web.Response:
    return await _delete(request, "telegram")


async def delete_webhook(request: web.Request) -> web.Response:
    return await _delete(request, "webhook")


def _page_limit(params: dict[str, str]) -> int:
    value = params.get("limit")
    if value is None:
        return DEFAULT_PAGE
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= store.MAX_PAGE:
        raise bad_parameter("limit", f"limit must be an integer from 1 to {store.MAX_PAGE}")
    return int(value)


async def list_deliveries(request: web.Request) -> web.Response:
    params = query_params(request, {"limit", "cursor", "status"})
    limit = _page_limit(params)
    cursor = params.get("cursor")
    if cursor is not None and not _UUID.fullmatch(cursor):
        raise bad_parameter("cursor", "cursor is not one this API returned")
    status = params.get("status")
    if status is not None and status not in DELIVERY_STATES:
        raise bad_parameter("status", f"status is one of: {', '.join(DELIVERY_STATES)}")
    async with tenant_connection(request) as conn:
        page = await store.list_deliveries(
            conn,
            tenant_id=request[TENANT].id,
            status=status,
            after=uuid.UUID(cursor) if cursor else None,
            limit=limit,
        )
    return web.json_response(
        {
            "deliveries": [_delivery_view(d) for d in page],
            "next_cursor": str(page[-1].id) if len(page) == limit else None,
        }
    )


async def replay_delivery(request: web.Request) -> web.Response:
    tenant = request[TENANT]
    raw = request.match_info["delivery_id"]
    if not _UUID.fullmatch(raw):
        raise ApiError(404, "not_found", "no such delivery")
    delivery_id = uuid.UUID(raw)
    async with tenant_connection(request) as conn, conn.transaction():
        outcome, rows = await store.replay(conn, delivery_id, tenant_id=tenant.id)
        if outcome == "replayed":
            await audit.record_action(
                conn,
                actor=f"tenant:{tenant.id}",
                action="notification.replay",
                subject_kind="notification_delivery",
                subject_id=raw,
                before={"status": "dead"},
                after={"status": "pending"},
                cause="api",
            )
        delivery = await store.get_delivery(conn, delivery_id, tenant_id=tenant.id)
    if outcome == "not_found" or delivery is None:
        raise ApiError(404, "not_found", "no such delivery")
    if outcome == "not_dead":
        raise ApiError(
            409, "not_dead", f"only a dead delivery is replayed; this one is {delivery.status}"
        )
    if outcome == "endpoint_removed":
        raise ApiError(409, "endpoint_removed", "its endpoint was removed; register one again")
    request.config_dict[AFTER_COMMIT].submit(rows)
    log.info("notification delivery replayed", delivery_id=raw)
    return web.json_response(_delivery_view(delivery), status=202)


def setup(notifications_app: web.Application) -> None:
    """Routes of the sub-app mounted at /api/v1/notifications."""
    router = notifications_app.router
    router.add_get("", list_endpoints)
    router.add_put("/telegram", put_telegram)
    router.add_put("/webhook", put_webhook)
    router.add_delete("/telegram", delete_telegram)
    router.add_delete("/webhook", delete_webhook)
    router.add_get("/deliveries", list_deliveries)
    router.add_post("/deliveries/{delivery_id}/replay", replay_delivery)
