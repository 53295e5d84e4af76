"""Self-service accounts' housekeeping: expired emailed links and session tokens are deleted
once a day has passed since they expired, so the tables hold what can still be used."""

from __future__ import annotations

import structlog
from apscheduler.triggers.interval import IntervalTrigger

from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import scheduled
from colmena.store import accounts as store

log = structlog.get_logger(__name__)

EXPIRED_KEPT_S = 86_400.0


@scheduled("account-cleanup", IntervalTrigger(hours=1))
async def cleanup_accounts(resources: Resources) -> dict[str, int]:
    """Delete links and tokens expired for over a day, and sessions left with none."""
    async with resources.pool.acquire() as conn:
        removed = await store.delete_expired(conn, older_than_s=EXPIRED_KEPT_S)
    log.info("account cleanup done", **{f"{kind}_removed": n for kind, n in removed.items()})
    return removed
