"""The `audit-seal` job: link the newest audit rows to the hash chain every minute.

The triggers that write audit rows take no chain lock, so payments never wait on each other
for the trail; this job appends the chain links behind them (`colmena.store.audit.seal`), and
`colmena audit verify` seals what is left before it checks.
"""

from __future__ import annotations

import structlog
from apscheduler.triggers.interval import IntervalTrigger

from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import scheduled
from colmena.store import audit

log = structlog.get_logger(__name__)


@scheduled("audit-seal", IntervalTrigger(minutes=1))
async def seal_tick(resources: Resources) -> None:
    async with resources.pool.acquire() as conn:
        sealed = await audit.seal(conn)
    if sealed:
        log.info("audit rows sealed", sealed=sealed)
