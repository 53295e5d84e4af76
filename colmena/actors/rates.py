"""Rate scraping: fetch, judge, keep. Scheduled ticks, the two actors, and operator acceptance.

One scrape is: fetch the source (gateway retries included), then, in one transaction holding
the source's row lock, judge every value against the last published one and store it as
accepted, suspect or rejected, update the source's health and log the scrape. Nothing but
'accepted' and 'confirmed' values is ever read by the API or the metrics.

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

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum

import asyncpg
import structlog

from colmena.config import Settings
from colmena.config.metrics import SCRAPES
from colmena.domain.rate_schedule import CARACAS, bcv_trigger, binance_trigger
from colmena.domain.rates import (
    SanityResult,
    Verdict,
    check_effective_date,
    check_rate,
    market_rate,
)
from colmena.errors import PermanentError
from colmena.gateways import bcv, binance
from colmena.runtime.outbox import publish_now
from colmena.runtime.registry import actor
from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import scheduled
from colmena.store import outbox
from colmena.store import rates as store
from colmena.store.outbox import OutboxMessage
from colmena.store.rates import RateRow

log = structlog.get_logger(__name__)

QUEUE = "rates"
BINANCE_PAIR = "USDT/VES"
SUCCESSES = frozenset({"accepted", "unchanged", "suspect"})  # anything else counts toward stale


class Source(StrEnum):
    BCV = "bcv"
    BINANCE = "binance"

    @property
    def actor_name(self) -> str:
        return f"scrape_{self.value}"


class EmptyBookError(Exception):
    """Binance answered, but no side had a trustworthy price: nothing is written."""

    outcome = "empty"


FETCH_ERRORS = (bcv.BcvError, binance.BinanceError, EmptyBookError)


@dataclass(frozen=True, slots=True)
class Observation:
    """One value a source showed: VES per unit of `pair`, valid from `effective_date`."""

    pair: str
    value: Decimal
    effective_date: date
    buy: Decimal | None = None
    sell: Decimal | None = None


@dataclass(frozen=True, slots=True)
class PairResult:
    """What became of one observation: action is the stored status, 'unchanged' (no new row)
    or 'confirmed' (an unchanged suspect, published now); `row` is the row it concerns."""

    pair: str
    action: str
    row: RateRow


@dataclass(slots=True)
class ScrapeReport:
    source: str
    outcome: str
    results: list[PairResult] = field(default_factory=list)
    error: str | None = None
    stale: bool = False

    @property
    def ok(self) -> bool:
        """Something is published and current: what `colmena rates scrape` exits 0 on."""
        return self.outcome in ("accepted", "unchanged")


class AcceptRefused(Exception):
    """The operator asked to publish something that must not be (message says why)."""


# --- fetching ------------------------------------------------------------------------------------


def caracas_today() -> date:
    return datetime.now(CARACAS).date()


async def fetch(source: Source, settings: Settings) -> list[Observation]:
    """What the source shows right now; a gateway error (or an empty book) is raised."""
    timeout, attempts, backoff = (
        settings.rates_timeout_s,
        settings.rates_attempts,
        settings.rates_backoff_s,
    )
    if source is Source.BCV:
        page = await bcv.scrape_bcv(
            settings.bcv_url,
            ca_bundle=settings.bcv_ca_bundle or bcv.DEFAULT_CA_BUNDLE,
            timeout=timeout,
            attempts=attempts,
            backoff=backoff,
        )
        return [Observation(pair, value, page.effective_date) for pair, value in page.rates.items()]
    book = await binance.fetch_p2p_book(
        settings.binance_p2p_url,
        pay_types=settings.binance_pay_types,
        timeout=timeout,
        attempts=attempts,
        backoff=backoff,
    )
    rate = market_rate(
        book[binance.Side.BUY], book[binance.Side.SELL], top_n=settings.binance_top_n
    )
    if rate is None:
        raise EmptyBookError("no trustworthy advert on one side of the book")
    return [Observation(BINANCE_PAIR, rate.mid, caracas_today(), buy=rate.buy, sell=rate.sell)]


# --- judging and keeping -------------------------------------------------------------------------


def judge(
    source: Source,
    observation: Observation,
    settings: Settings,
    *,
    today: date,
    published: RateRow | None,
    pending: RateRow | None,
) -> SanityResult:
    """The sanity gate for one value (pure: every input is an argument)."""
    bounds = settings.rate_bounds(observation.pair)
    if bounds is None:
        return SanityResult(Verdict.REJECTED, f"no bounds configured for {observation.pair}")
    lower, upper = bounds
    if source is Source.BCV:
        dated = check_effective_date(observation.effective_date, today)
        if dated.verdict is Verdict.REJECTED:
            return dated
        if published is not None and observation.effective_date < published.effective_date:
            return SanityResult(
                Verdict.REJECTED,
                f"effective date {observation.effective_date} precedes the published {published.effective_date}",
            )
    for side, quote in (("buy", observation.buy), ("sell", observation.sell)):
        if quote is not None:
            checked = check_rate(quote, lower=lower, upper=upper, last_accepted=None)
            if checked.verdict is Verdict.REJECTED:
                return SanityResult(Verdict.REJECTED, f"{side} {checked.reason}")
    return check_rate(
        observation.value,
        lower=lower,
        upper=upper,
        last_accepted=published.value if published else None,
        pending_suspect=pending.value if pending else None,
        max_change_pct=settings.rates_max_change_pct,
        confirm_tolerance_pct=settings.rates_confirm_tolerance_pct,
    )


async def keep(
    conn: asyncpg.Connection,
    source: Source,
    observation: Observation,
    settings: Settings,
    *,
    today: date,
) -> PairResult:
    """Store one observation (the caller holds the source lock and the transaction).

    BCV shows the same value all day: an unchanged value and date writes no row, it only
    restarts the value's age, and confirms it if it was still suspect (a later scrape agreeing).
    """
    pair = observation.pair
    kept = await store.latest_kept(conn, source, pair)
    if (
        source is Source.BCV
        and kept is not None
        and kept.value == observation.value
        and kept.effective_date == observation.effective_date
    ):
        if kept.status == "suspect":
            row = await store.confirm(
                conn, kept.id, by="scrape", reason="seen again by the next scrape"
            )
            return PairResult(pair, "confirmed", row)
        await store.touch_seen(conn, kept.id)
        return PairResult(pair, "unchanged", kept)
    published = await store.latest_published(conn, source, pair)
    pending = await store.pending_suspect(conn, source, pair, published.id if published else 0)
    verdict = judge(
        source, observation, settings, today=today, published=published, pending=pending
    )
    row = await store.insert(
        conn,
        source=source,
        pair=pair,
        value=observation.value,
        buy=observation.buy,
        sell=observation.sell,
        effective_date=observation.effective_date,
        status=verdict.verdict.value,
        reason=verdict.reason,
    )
    if verdict.confirms_suspect and pending is not None:
        await store.confirm(conn, pending.id, by="scrape", reason=f"confirmed by rate {row.id}")
    return PairResult(pair, verdict.verdict.value, row)


def summarize(results: list[PairResult]) -> str:
    """The scrape's outcome label: rejected only when nothing survived the gate."""
    actions = {result.action for result in results}
    if actions <= {"rejected"}:
        return "rejected"
    if actions & {"accepted", "confirmed"}:
        return "accepted"
    if "suspect" in actions:
        return "suspect"
    return "unchanged"


async def scrape(
    source: Source,
    conn: asyncpg.Connection,
    settings: Settings,
    *,
    scheduled_at: datetime | None = None,
) -> ScrapeReport:
    """Run one scrape of `source` end to end and report what it stored or why it refused.

    `scheduled_at` (the tick) makes it idempotent: a second run for the same tick does nothing,
    and a tick older than COLMENA_RATES_TICK_EXPIRY_S is skipped instead of replayed. On-demand
    scrapes (the CLI) pass None and always run.
    """
    run_key = None
    if scheduled_at is not None:
        run_key = scheduled_at.isoformat()
        if await store.run_done(conn, source, run_key):
            log.info("rates scrape already done for this tick", source=source.value, tick=run_key)
            return ScrapeReport(source, "duplicate")
        age = (datetime.now(UTC) - scheduled_at).total_seconds()
        if age > settings.rates_tick_expiry_s:
            return await _skip_expired(conn, source, run_key, age)
    today = caracas_today()
    try:
        observations, error = await fetch(source, settings), None
    except FETCH_ERRORS as exc:
        observations, error = [], exc
    health: store.SourceHealth | None = None
    async with conn.transaction():
        await store.lock_source(conn, source)
        if run_key is not None and await store.run_done(conn, source, run_key):
            return ScrapeReport(source, "duplicate")
        report = ScrapeReport(source, "")
        if error is not None:
            report.outcome, report.error = error.outcome, str(error)
        else:
            report.results = [
                await keep(conn, source, obs, settings, today=today) for obs in observations
            ]
            report.outcome = summarize(report.results)
            refused = [
                f"{r.pair}: {r.row.reason}"
                for r in report.results
                if r.action in ("rejected", "suspect")
            ]
            report.error = "; ".join(refused) or None
        if report.outcome in SUCCESSES:
            await store.note_success(conn, source, report.outcome)
        else:
            health = await store.note_failure(
                conn,
                source,
                report.outcome,
                report.error or report.outcome,
                stale_after=settings.rates_stale_after,
            )
            report.stale = health.stale
        await store.record_scrape(conn, source, run_key, report.outcome, report.error)
    SCRAPES.labels(source=source.value, outcome=report.outcome).inc()
    if health is not None:
        _log_failure(report, health)
    _log_result(report)
    return report


async def _skip_expired(
    conn: asyncpg.Connection, source: Source, run_key: str, age: float
) -> ScrapeReport:
    async with conn.transaction():
        await store.lock_source(conn, source)
        if not await store.run_done(conn, source, run_key):
            await store.record_scrape(conn, source, run_key, "expired", f"tick {age:.0f}s old")
    SCRAPES.labels(source=source.value, outcome="expired").inc()
    log.warning(
        "rates tick expired: skipped, the next tick scrapes",
        source=source.value,
        tick=run_key,
        age_s=round(age),
    )
    return ScrapeReport(source, "expired", error=f"tick {age:.0f}s old")


def _log_failure(report: ScrapeReport, health: store.SourceHealth) -> None:
    fields = {
        "source": report.source,
        "outcome": report.outcome,
        "error": report.error,
        "consecutive_failures": health.consecutive_failures,
        "last_success_at": health.last_success_at.isoformat() if health.last_success_at else None,
    }
    if health.stale:
        log.error("rates source stale", **fields)
    else:
        log.warning("rates scrape failed", **fields)


def _log_result(report: ScrapeReport) -> None:
    for result in report.results:
        if result.action in ("suspect", "rejected"):
            log.warning(
                f"rate {result.action}",
                source=report.source,
                pair=result.pair,
                rate_id=result.row.id,
                value=str(result.row.value),
                reason=result.row.reason,
            )
    if report.outcome in SUCCESSES:
        log.info(
            "rates scraped",
            source=report.source,
            outcome=report.outcome,
            pairs={r.pair: r.action for r in report.results},
        )


# --- operator acceptance -------------------------------------------------------------------------


async def accept(conn: asyncpg.Connection, rate_id: int) -> tuple[RateRow, bool]:
    """Publish a suspect on an operator's word; returns (row, changed).

    Refused for a rejected value (out of bounds or misdated: garbage by definition) and for a
    suspect a newer published value has overtaken (publishing it would show an older rate).
    """
    async with conn.transaction():
        peek = await conn.fetchval("SELECT source FROM rates WHERE id = $1", rate_id)
        if peek is None:
            raise AcceptRefused(f"no rate #{rate_id}")
        await store.lock_source(conn, peek)  # the scrape's lock order: source, then rate rows
        row = await store.get_for_update(conn, rate_id)
        assert row is not None  # rates rows are never deleted
        if row.published:
            return row, False
        if row.status == "rejected":
            raise AcceptRefused(
                f"rate #{rate_id} was rejected ({row.reason}); rejected values are never published"
            )
        newest = await store.latest_published(conn, row.source, row.pair)
        if newest is not None and newest.id > row.id:
            raise AcceptRefused(f"rate #{rate_id} is outdated: #{newest.id} was published after it")
        confirmed = await store.confirm(
            conn, rate_id, by="operator", reason="accepted by an operator"
        )
    log.warning(
        "rate accepted by an operator",
        rate_id=rate_id,
        source=row.source,
        pair=row.pair,
        value=str(row.value),
    )
    return confirmed, True


# --- actors and schedule -------------------------------------------------------------------------


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
        await scrape(source, conn, resources.settings, scheduled_at=tick)


@actor(queue=QUEUE, name=Source.BCV.actor_name)
async def scrape_bcv(resources: Resources, scheduled_at: str | None = None) -> None:
    """Scrape the BCV official rates. A failed fetch is recorded, not retried by Dramatiq: the
    gateway already retried, and the next tick is the next attempt."""
    await _run(resources, Source.BCV, scheduled_at)


@actor(queue=QUEUE, name=Source.BINANCE.actor_name)
async def scrape_binance(resources: Resources, scheduled_at: str | None = None) -> None:
    """Scrape the Binance P2P USDT/VES book (same failure policy as scrape_bcv)."""
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
            actor=source.actor_name,
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
