"""Checkout orders' housekeeping: orders nobody paid are marked expired, so the pages and the
operator see them for what they are."""

from __future__ import annotations

import structlog
from apscheduler.triggers.interval import IntervalTrigger

from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import scheduled
from colmena.store import orders as store

log = structlog.get_logger(__name__)


@scheduled("orders-expire", IntervalTrigger(minutes=15))
async def expire_orders(resources: Resources) -> int:
    """Mark orders unpaid after COLMENA_CHECKOUT_ORDER_TTL_HOURS expired; how many."""
    older_than_s = resources.settings.checkout_order_ttl_hours * 3600
    async with resources.pool.acquire() as conn:
        expired = await store.expire_unpaid(conn, older_than_s=older_than_s)
    if expired:
        log.info("unpaid orders expired", orders=expired)
    return expired
