"""The ingress application factory: settings in, a ready `web.Application` out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from colmena.config import Settings
from colmena.http import (
    account_links,
    accounts,
    billing,
    bitso_webhooks,
    catalog,
    checkout,
    console,
    health,
    licenses,
    openapi,
    ops,
    rates,
    tenants,
    webhooks,
)
from colmena.http.context import RESOURCES, SETTINGS
from colmena.http.middlewares import (
    BODY_READ_TIMEOUT,
    MAX_BODY,
    MIDDLEWARES,
    RATE_LIMITER,
    REFUSAL_DELAY,
    REFUSAL_MAX_HELD,
    REFUSALS_HELD,
    TRUSTED_PROXIES,
    UNAVAILABLE_LOGGED,
    security_headers,
)
from colmena.http.publishing import AFTER_COMMIT, AfterCommitPublisher
from colmena.http.ratelimit import limiter_for
from colmena.http.tenant_limits import TenantSlots
from colmena.runtime.resources import Resources

ROUTE_MODULES = (
    health,
    webhooks,
    bitso_webhooks,
    rates,
    catalog,
    checkout,
    licenses,
    ops,
    tenants,
    accounts,
    account_links,
    billing,
    console,
    openapi,
)
DRAIN_TIMEOUT_S = 10.0


async def _resources_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[RESOURCES].start()
    yield
    await app[AFTER_COMMIT].drain(DRAIN_TIMEOUT_S)
    await app[RESOURCES].close()


async def _limiter_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[RATE_LIMITER].close()


def create_app(settings: Settings, resources: Resources) -> web.Application:
    app = web.Application(middlewares=MIDDLEWARES, client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[RESOURCES] = resources
    app[MAX_BODY] = settings.max_body_bytes
    app[BODY_READ_TIMEOUT] = settings.body_read_timeout_s
    app[UNAVAILABLE_LOGGED] = set()
    app[REFUSAL_DELAY] = settings.refusal_delay_s
    app[REFUSAL_MAX_HELD] = settings.refusal_max_held
    app[REFUSALS_HELD] = TenantSlots()
    app[RATE_LIMITER] = limiter_for(settings)
    app[TRUSTED_PROXIES] = settings.trusted_proxy_networks()
    app[AFTER_COMMIT] = AfterCommitPublisher(resources)
    app[health.GAUGE_REFRESHERS] = []
    for module in ROUTE_MODULES:
        module.setup(app)
    app.on_response_prepare.append(security_headers)
    app.cleanup_ctx.append(_resources_ctx)
    app.cleanup_ctx.append(_limiter_ctx)
    return app
