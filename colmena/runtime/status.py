"""One snapshot of the running system for `colmena status`: RabbitMQ and PostgreSQL, read only.

The broker part is best effort: an operator running status during an outage still wants the
database half (outbox backlog growing is exactly what a RabbitMQ outage looks like).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from colmena.config import Settings
from colmena.errors import StartupError
from colmena.runtime.queue_admin import BrokerUnreachable, QueueAdmin
from colmena.runtime.queue_probe import QueueDepth
from colmena.runtime.queues import DOMAIN_QUEUES
from colmena.runtime.startup import open_database
from colmena.store import ops as ops_store
from colmena.store.migrate import SchemaNotMigrated, ensure_migrated
from colmena.store.outbox import backlog
from colmena.store.rates import RateRow


@dataclass(frozen=True)
class LastRate:
    source: str
    pair: str
    value: Decimal
    status: str
    effective_date: str
    last_seen_at: datetime
    age_s: float
    source_stale: bool


@dataclass(frozen=True)
class Snapshot:
    queues: list[QueueDepth] | None
    broker_error: str | None
    outbox_pending: int
    outbox_oldest_age_s: float
    rates: list[LastRate] | None
    bots: dict[str, int] | None

    @property
    def dead_letters(self) -> int | None:
        return None if self.queues is None else sum(depth.dead for depth in self.queues)

    def to_json(self) -> dict[str, Any]:
        return {
            "queues": None
            if self.queues is None
            else {depth.queue: depth.to_json() for depth in self.queues},
            "broker_error": self.broker_error,
            "dead_letters": self.dead_letters,
            "outbox": {
                "pending": self.outbox_pending,
                "oldest_age_s": round(self.outbox_oldest_age_s, 3),
            },
            "rates": None
            if self.rates is None
            else [
                {
                    "source": rate.source,
                    "pair": rate.pair,
                    "value": str(rate.value),
                    "status": rate.status,
                    "effective_date": rate.effective_date,
                    "last_seen_at": rate.last_seen_at.isoformat(),
                    "age_s": round(rate.age_s, 3),
                    "source_stale": rate.source_stale,
                }
                for rate in self.rates
            ],
            "bots": self.bots,
        }


async def _queues(admin: QueueAdmin) -> tuple[list[QueueDepth] | None, str | None]:
    try:
        return await admin.depths(DOMAIN_QUEUES), None
    except BrokerUnreachable as exc:
        return None, str(exc)
    finally:
        await admin.close()


def _last_rates(found: tuple[list[RateRow], set[str]] | None) -> list[LastRate] | None:
    if found is None:
        return None
    latest, stale = found
    now = datetime.now(UTC)
    return [
        LastRate(
            source=row.source,
            pair=row.pair,
            value=row.value,
            status=row.status,
            effective_date=row.effective_date.isoformat(),
            last_seen_at=row.last_seen_at,
            age_s=(now - row.last_seen_at).total_seconds(),
            source_stale=row.source in stale,
        )
        for row in latest
    ]


async def collect(settings: Settings, admin: QueueAdmin) -> Snapshot:
    """Read everything; raises StartupError when the database is unreachable or not migrated."""
    conn = await open_database(settings.require_database_url())
    try:
        try:
            await ensure_migrated(conn)
        except SchemaNotMigrated as exc:
            raise StartupError(str(exc)) from None
        pending, oldest = await backlog(conn)
        rates = _last_rates(await ops_store.last_rates(conn))
        bots = await ops_store.bots_by_state(conn)
    finally:
        await conn.close()
    queues, broker_error = await _queues(admin)
    return Snapshot(
        queues=queues,
        broker_error=broker_error,
        outbox_pending=pending,
        outbox_oldest_age_s=oldest,
        rates=rates,
        bots=bots,
    )
