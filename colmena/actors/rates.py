"""Rate scraping on the worker: the two scrape actors and the scheduled ticks that send them.

The actors parse the tick and run one scrape (colmena.store.rate_keeping.scrape, fetching
through colmena.gateways.rate_sources). A failed fetch is recorded by the scrape, not retried by
Dramatiq: the gateway already retried, and the next tick is the next attempt. Anything else
(the database gone) raises and is retried as usual.

Schedule: the scheduler's tick does not scrape. It records an outbox row for the actor (keyed by
the tick's minute) and publishes it, because
- a scrape can take minutes of HTTP retries, and the scheduler runs every job on one event loop
  under advisory locks: the rates worker pool is where slow, retried network work belongs,
  with its time limit and dead letters;
- the dedupe key makes a tick idempotent (two schedulers, a repeated tick: one message), and the
  same key rides along as the scrape's run key, so a redelivered message scrapes once;
- a tick taken while RabbitMQ is down is not lost: the relay publishes it later, and a message
  older than COLMENA_RATES_TICK_EXPIRY_S is skipped, so an outage is never replayed as a burst.
"""

from __future__ import annotations

from datetime import UTC, datetime

from colmena.domain.rate_schedule import bcv_trigger, binance_trigger
from colmena.domain.rates import Source
from colmena.errors import PermanentError
from colmena.gateways import rate_sources
from colmena.runtime.outbox import publish_now
from colmena.runtime.registry import actor
from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import scheduled
from colmena.store import outbox, rate_keeping
from colmena.store.outbox import OutboxMessage

QUEUE = "rates"


def actor_name(source: Source) -> str:
    return f"scrape_{source.value}"


def _tick(scheduled_at: str | None) -> datetime | None:
    if scheduled_at is None:
        return None
    try:
        tick = datetime.fromisoformat(scheduled_at)
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"scheduled_at is not an ISO datetime: {scheduled_at!r}") from exc
    if tick.tzinfo is None:
        raise PermanentError("scheduled_at must carry a timezone")
    return tick


async def _run(resources: Resources, source: Source, scheduled_at: str | None) -> None:
    tick = _tick(scheduled_at)
    async with resources.pool.acquire() as conn:
        await rate_keeping.scrape(
            source, conn, resources.settings, fetch=rate_sources.fetch, scheduled_at=tick
        )


@actor(queue=QUEUE, name=actor_name(Source.BCV))
async def scrape_bcv(resources: Resources, scheduled_at: str | None = None) -> None:
    """Scrape the BCV official rates (for the tick `scheduled_at`, or now when None)."""
    await _run(resources, Source.BCV, scheduled_at)


@actor(queue=QUEUE, name=actor_name(Source.BINANCE))
async def scrape_binance(resources: Resources, scheduled_at: str | None = None) -> None:
    """Scrape the Binance P2P USDT/VES book (for the tick `scheduled_at`, or now when None)."""
    await _run(resources, Source.BINANCE, scheduled_at)


async def enqueue_scrape(
    resources: Resources, source: Source, *, now: datetime | None = None
) -> OutboxMessage | None:
    """Record the scrape message for the tick at `now` (to the minute) and publish it.

    Returns None when that tick was already recorded (another scheduler, a repeated tick).
    """
    tick = (now or datetime.now(UTC)).astimezone(UTC).replace(second=0, microsecond=0).isoformat()
    async with resources.pool.acquire() as conn, conn.transaction():
        row = await outbox.record(
            conn,
            queue=QUEUE,
            actor=actor_name(source),
            args=[tick],
            dedupe_key=f"rates:{source.value}:{tick}",
        )
    await publish_now(resources.pool, resources.publisher, [row])
    return row


@scheduled("rates-bcv", bcv_trigger())
async def bcv_tick(resources: Resources) -> None:
    await enqueue_scrape(resources, Source.BCV)


@scheduled("rates-binance", binance_trigger())
async def binance_tick(resources: Resources) -> None:
    await enqueue_scrape(resources, Source.BINANCE)
