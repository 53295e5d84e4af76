"""The tenant's provider keys (`/api/v1/keys`): sealed here, opened only on the supervisor side.

The ingress holds the supervisor's X25519 public key (COLMENA_KEY_SEAL_PUBLIC_KEY) and no key
that opens anything: a key is masked to its last four characters, sealed for this tenant and
provider, and stored as a pending row with the outbox message that has a bots worker take it
in, in one transaction. Keys never come back out: listing shows the provider and the mask.
Writes (POST, DELETE) of one tenant are bounded per process (COLMENA_TENANT_MAX_KEY_WRITES).
Nothing here logs a key.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from typing import Any

import structlog
from aiohttp import web

from colmena.domain.key_sealing import SealError, decode_key, seal
from colmena.domain.tenants import PROVIDER, mask_last4
from colmena.http.context import SETTINGS
from colmena.http.errors import ApiError
from colmena.http.payloads import field_errors, iso, json_body
from colmena.http.publishing import AFTER_COMMIT
from colmena.http.tenant_auth import TENANT
from colmena.http.tenant_limits import Slot, TenantSlots, held, tenant_connection
from colmena.store import provider_keys as store

log = structlog.get_logger(__name__)

MAX_KEY_CHARS = 4096
KEY_WRITES = web.AppKey("provider_key_writes", TenantSlots)
# Printable ASCII without surrounding spaces (providers' keys are ASCII), as the document says.
_KEY = re.compile(r"[!-~]([ -~]*[!-~])?")


def key_input(body: Any) -> tuple[str, str]:
    """(provider, key) of a valid body, or 422 naming every field that is wrong."""
    if not isinstance(body, dict):
        raise field_errors(
            [("body", "expected an object with provider and key")], "the key is not valid"
        )
    provider, key = body.get("provider"), body.get("key")
    errors = []
    if not isinstance(provider, str) or not PROVIDER.fullmatch(provider):
        errors.append(
            ("provider", "lower-case letters, digits and _, 2 to 32 characters, e.g. binance")
        )
    if not isinstance(key, str) or not 8 <= len(key) <= MAX_KEY_CHARS or not _KEY.fullmatch(key):
        errors.append(
            ("key", f"8 to {MAX_KEY_CHARS} printable ASCII characters without surrounding spaces")
        )
    unknown = sorted(set(body) - {"provider", "key"})
    if unknown:
        errors.append((unknown[0], "unknown field"))
    if errors or not isinstance(key, str) or not isinstance(provider, str):
        raise field_errors(errors, "the key is not valid")
    return provider, key


def supervisor_public_key(
    request: web.Request,
    *,
    sealing: str = "provider keys",
    refusal: str = "provider keys cannot be stored right now",
) -> bytes:
    """The supervisor side's public key, which every secret a tenant hands the ingress is
    sealed to; without one, a 503 `refusal` and an error line naming what cannot be sealed."""
    configured = request.config_dict[SETTINGS].key_seal_public_key
    try:
        if configured is None:
            raise SealError("COLMENA_KEY_SEAL_PUBLIC_KEY is not set")
        return decode_key(configured)
    except SealError as exc:
        log.error(f"{sealing} cannot be stored", error=str(exc))
        raise ApiError(503, "not_configured", refusal) from None


def _key_write(request: web.Request) -> AbstractContextManager[Slot]:
    """One of the tenant's key writes at once in this process, or a 429."""
    limit = request.config_dict[SETTINGS].tenant_max_key_writes
    writes = request.config_dict[KEY_WRITES]
    return held(writes, request[TENANT].id, limit, code="too_many_key_writes", what="key writes")


async def put_key(request: web.Request) -> web.Response:
    tenant = request[TENANT]
    with _key_write(request):
        provider, key = key_input(await json_body(request))
        public_key = supervisor_public_key(request)
        last4 = mask_last4(key)
        sealed = seal(public_key, key, tenant_id=tenant.id, provider=provider)
        async with tenant_connection(request) as conn, conn.transaction():
            row = await store.put_pending(conn, tenant.id, provider, sealed=sealed, last4=last4)
    request.config_dict[AFTER_COMMIT].submit([row])
    log.info("provider key stored", provider=provider, sealed_for="supervisor")
    return web.json_response({"provider": provider, "last4": last4}, status=201)


async def list_keys(request: web.Request) -> web.Response:
    async with tenant_connection(request) as conn:
        keys = await store.list_keys(conn, request[TENANT].id)
    return web.json_response(
        {
            "keys": [
                {"provider": k.provider, "last4": k.last4, "updated_at": iso(k.updated_at)}
                for k in keys
            ]
        }
    )


async def delete_key(request: web.Request) -> web.Response:
    provider = request.match_info["provider"]
    deleted, delivery = False, None
    # Any other name cannot have a key (and may not reach SQL: NUL).
    if PROVIDER.fullmatch(provider):
        with _key_write(request):
            async with tenant_connection(request) as conn:
                deleted, delivery = await store.delete_key(conn, request[TENANT].id, provider)
    if not deleted:
        raise ApiError(404, "not_found", "no key for that provider")
    request.config_dict[AFTER_COMMIT].submit([delivery])
    log.info("provider key deleted", provider=provider)
    return web.Response(status=204)


def setup(keys_app: web.Application) -> None:
    """Routes of the sub-app mounted at /api/v1/keys."""
    keys_app[KEY_WRITES] = TenantSlots()
    keys_app.router.add_post("", put_key)
    keys_app.router.add_get("", list_keys)
    keys_app.router.add_delete("/{provider}", delete_key)
