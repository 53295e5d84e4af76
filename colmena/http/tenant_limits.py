"""Per-tenant bounds of the tenant API, so that one tenant cannot fill what every tenant shares.

A bound counts what one key (a token digest, a tenant id) holds in this ingress process, and
is checked and taken with no await in between, so concurrent requests cannot overshoot it; a
request over a bound is a 429 with Retry-After, it never queues for what it asked (its answer
is held back by the refusal delay, see `middlewares.refusal_delay_middleware`). The bounds together
keep one tenant below the database pool's size, and a request that still finds the pool busy
waits COLMENA_TENANT_DB_ACQUIRE_SECONDS at most, then is a 503: nothing waits forever.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import asyncpg
from aiohttp import web

from colmena.http.context import RESOURCES, SETTINGS
from colmena.http.errors import ApiError

RETRY_AFTER_S = 1


class TenantSlots:
    """What each key holds of one bound; `take` and `release` never await."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def take(self, key: str, limit: int) -> bool:
        if self._open[key] >= limit:
            return False
        self._open[key] += 1
        return True

    def release(self, key: str) -> None:
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]

    def open_count(self, key: str) -> int:
        return self._open[key]


class Slot:
    """One taken slot; `release` may be called early (and again: only the first counts)."""

    def __init__(self, slots: TenantSlots, key: str) -> None:
        self._slots: TenantSlots | None = slots
        self._key = key

    def release(self) -> None:
        if self._slots is not None:
            self._slots.release(self._key)
            self._slots = None


# Requests in flight per API token (taken before the token is looked up, so lookups count too).
REQUESTS = web.AppKey("tenant_requests", TenantSlots)


def too_many(code: str, message: str, *, retry_after_s: int = RETRY_AFTER_S) -> ApiError:
    return ApiError(429, code, message, headers={"Retry-After": str(retry_after_s)})


@contextmanager
def held(slots: TenantSlots, key: str, limit: int, *, code: str, what: str) -> Iterator[Slot]:
    """A slot of `slots` for `key` while the block runs, or a 429 naming `what` is bounded."""
    if not slots.take(key, limit):
        raise too_many(code, f"at most {limit} {what} at once; retry shortly")
    slot = Slot(slots, key)
    try:
        yield slot
    finally:
        slot.release()


@asynccontextmanager
async def tenant_connection(request: web.Request) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for a tenant request, or a 503 once the pool stayed busy too long."""
    pool = request.config_dict[RESOURCES].pool
    timeout = request.config_dict[SETTINGS].tenant_db_acquire_seconds
    try:
        conn = await pool.acquire(timeout=timeout)
    except TimeoutError:
        raise ApiError(
            503,
            "busy",
            "the server is busy; retry shortly",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from None
    try:
        yield conn
    finally:
        await pool.release(conn)
