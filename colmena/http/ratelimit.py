"""Rate limits per client across routes, with a separate budget for failed authentication.

Each client (an address, see `client_address`) has one budget per route group, shared by every
route of the group, and one failed-authentication budget shared by all of them. Wrong tenant or
admin tokens, unknown download tokens and webhooks with a bad signature spend from it; once it is
empty the client is locked out of every limited route (429) until it refills. Webhooks get a
budget per provider, so a provider's retry storm spends its own allowance and nobody else's.
Health and metrics are exempt: probes must never be throttled.

Budgets live in Redis when COLMENA_REDIS_URL is set (shared by every ingress process), else in
the process (`ratelimit_store`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from colmena.config import Settings
from colmena.config.rate_limit_settings import RATE_GROUPS, RateRule
from colmena.http.ratelimit_store import FallbackStore, MemoryStore, RedisStore, Store, Take

EXEMPT_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
# Route prefixes no budget pays for: the console's static files (a page's stylesheet and scripts,
# immutable, served from memory; they would otherwise cost each page view three requests) and
# `colmena dev`'s control routes (token-guarded, mounted by dev only), which the dev console
# calls on the browser's behalf from the same loopback address.
EXEMPT_PREFIXES = ("/console/static/", "/dev/")
# (route template prefix, group), first match wins; any other route is "public".
ROUTE_GROUPS: tuple[tuple[str, str], ...] = (
    ("/webhooks/", "webhooks"),
    ("/api/v1/admin/", "admin"),
    ("/api/v1/rates/", "rates"),
    ("/api/v1/openapi.json", "public"),
    ("/api/v1/", "tenant_api"),
    ("/downloads/", "downloads"),
    ("/console/", "console"),
)
FAILED_AUTH = "failed_auth"


@functools.lru_cache(maxsize=1024)
def group_of(route: str) -> str | None:
    """The group a route template belongs to; None for the exempt ones. Cached: routes are
    templates, a bounded set asked about on every request."""
    if route in EXEMPT_ROUTES or route.startswith(EXEMPT_PREFIXES):
        return None
    return next((group for prefix, group in ROUTE_GROUPS if route.startswith(prefix)), "public")


@dataclass(frozen=True)
class Refusal:
    """A request that does not fit: which budget refused it and when one more would fit."""

    budget: str
    wait_s: float


class RequestLimiter:
    def __init__(self, rules: Mapping[str, RateRule | None], store: Store) -> None:
        self.rules = rules
        self.store = store

    def limits(self, route: str) -> bool:
        """Whether any budget applies to the route (none does with COLMENA_RATE_LIMIT_PRESET=off
        and no override), so a caller can skip working out who the client is."""
        group = group_of(route)
        return group is not None and (
            self.rules[FAILED_AUTH] is not None or self.rules[group] is not None
        )

    async def admit(self, client: str, route: str) -> Refusal | None:
        """Spend one request of the route's group, unless the client is locked out."""
        group = group_of(route)
        if group is None:
            return None
        budgets: list[tuple[str, Take]] = []
        failed_auth = self.rules[FAILED_AUTH]
        if failed_auth is not None:
            budgets.append((FAILED_AUTH, Take(_key(client, FAILED_AUTH), failed_auth, spend=False)))
        rule = self.rules[group]
        if rule is not None:
            name = f"{group}:{route}" if group == "webhooks" else group
            budgets.append((group, Take(_key(client, name), rule)))
        if not budgets:
            return None
        verdict = await self.store.apply([take for _, take in budgets])
        if verdict.refused_by is None:
            return None
        return Refusal(budgets[verdict.refused_by][0], verdict.wait_s)

    async def fail(self, client: str) -> bool:
        """Spend one failed authentication; True when that was the client's last (locked out)."""
        rule = self.rules[FAILED_AUTH]
        if rule is None:
            return False
        verdict = await self.store.apply([Take(_key(client, FAILED_AUTH), rule)])
        return verdict.refused_by is None and verdict.remaining[0] == 0

    async def spend(self, budget: str, key: str, rule: RateRule) -> float:
        """Spend from a budget of something other than a client (a download link): the wait,
        0 when it fits."""
        verdict = await self.store.apply([Take(f"{budget}:{key}", rule)])
        return verdict.wait_s

    async def close(self) -> None:
        await self.store.close()


def _key(client: str, budget: str) -> str:
    # The braces are a Redis Cluster hash tag: one client's budgets share a slot, as the
    # script that decides several of them at once requires.
    return f"{{{client}}}:{budget}"


def limiter_for(settings: Settings) -> RequestLimiter:
    rules = {group: settings.rate_rule(group) for group in RATE_GROUPS}
    if settings.redis_url is None:
        return RequestLimiter(rules, MemoryStore())
    client = aioredis.Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        retry=Retry(NoBackoff(), retries=0),  # the fallback answers at once; no sleeping retries
    )
    shared = RedisStore(client, settings.redis_prefix + "ratelimit:")
    return RequestLimiter(rules, FallbackStore(shared, MemoryStore()))


def per_minute(count: int) -> RateRule:
    """`count` a minute, all of them at once if need be."""
    return RateRule(count=count, period_s=60.0, burst=count)


def retry_after_header(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))
