"""Who calls the tenant API and the admin routes: one auth middleware per audience.

The tenant API's sub-apps carry `tenant_auth_middleware`: `Authorization: Bearer <token>`, whose
SHA-256 alone is stored, looked up by digest and compared in constant time. Two kinds of token
are taken: the operator-issued tenant token (`cmt_...`) and a self-service account's access
token (`cma_...`, `colmena.http.accounts`), which speaks for the account's tenant while it is
unexpired, its session is not revoked and the tenant exists. Either way the tenant then rides
on the request under `TENANT` (what every tenant route reads to know whose request it is) and
in the log context. Each token has at most
COLMENA_TENANT_MAX_REQUESTS requests in flight in this process, its lookup included (the slot
is taken before it, so a flood with one token cannot fill the database pool). The admin
sub-app carries `admin_auth_middleware` (COLMENA_BOT_ADMIN_TOKEN). A request that matched no
route (404, 405) passes through untouched, so it is answered exactly as anywhere else. Nothing
here logs a token.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from colmena.config.metrics import SECURITY_EVENTS
from colmena.domain.accounts import ACCESS_PREFIX, looks_like
from colmena.domain.tenants import looks_like_token, token_digest
from colmena.http.context import SETTINGS
from colmena.http.errors import ApiError
from colmena.http.middlewares import record_failed_auth
from colmena.http.tenant_limits import REQUESTS, Slot, held, tenant_connection
from colmena.store import accounts as accounts_store
from colmena.store import tenants as store

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TENANT = web.RequestKey("tenant", store.Tenant)
# The request's slot among its token's requests in flight; a stream releases it once open.
REQUEST_SLOT = web.RequestKey("tenant_request_slot", Slot)
_INVALID = "the API token is not valid"


def _unauthorized(message: str, *, realm: str = "colmena") -> ApiError:
    return ApiError(
        401, "unauthorized", message, headers={"WWW-Authenticate": f'Bearer realm="{realm}"'}
    )


def _refused(reason: str, message: str) -> ApiError:
    SECURITY_EVENTS.labels(reason=reason).inc()
    log.warning("security: tenant request refused", reason=reason)
    return _unauthorized(message)


def tenant_gone() -> ApiError:
    """For a tenant deleted while its request ran: its token no longer names anyone."""
    return _unauthorized(_INVALID)


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def _tenant_of(request: web.Request, token: str, digest: bytes) -> store.Tenant:
    found = None
    if looks_like_token(token):
        async with tenant_connection(request) as conn:
            found = await store.tenant_by_token(conn, digest)
    elif looks_like(ACCESS_PREFIX, token):
        async with tenant_connection(request) as conn:
            found = await accounts_store.tenant_by_access_token(conn, digest)
    if found is None or not hmac.compare_digest(found[1], digest):
        await record_failed_auth(request)
        raise _refused("tenant_token_invalid", _INVALID)
    return found[0]


@web.middleware
async def tenant_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.match_info.http_exception is not None:
        return await handler(request)
    token = _bearer(request)
    if token is None:
        await record_failed_auth(request)
        raise _refused("tenant_token_missing", "send Authorization: Bearer <your API token>")
    digest = token_digest(token)
    limit = request.config_dict[SETTINGS].tenant_max_requests
    requests = request.config_dict[REQUESTS]
    with held(requests, digest.hex(), limit, code="too_many_requests", what="requests") as slot:
        tenant = await _tenant_of(request, token, digest)
        request[TENANT] = tenant
        request[REQUEST_SLOT] = slot
        with structlog.contextvars.bound_contextvars(tenant_id=tenant.id):
            return await handler(request)


@web.middleware
async def admin_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.match_info.http_exception is not None:
        return await handler(request)
    configured = request.config_dict[SETTINGS].bot_admin_token
    if configured is None:
        raise ApiError(503, "not_configured", "COLMENA_BOT_ADMIN_TOKEN is not set on this server")
    token = _bearer(request) or ""
    if not hmac.compare_digest(token_digest(token), token_digest(configured.get_secret_value())):
        SECURITY_EVENTS.labels(reason="admin_token_invalid").inc()
        log.warning("security: admin request refused")
        await record_failed_auth(request)
        raise _unauthorized("admin token missing or not valid", realm="colmena-admin")
    return await handler(request)
