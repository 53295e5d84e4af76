"""Keeping rates: one scrape judged and stored in one transaction, and an operator's acceptance.

One scrape is: fetch the source (the `fetch` collaborator, gateway retries included), then, in
one transaction holding the source's row lock, judge every value against the last published
one (colmena.domain.rates) and store it as accepted, suspect or rejected, update the source's
health and log the scrape. Nothing but 'accepted' and 'confirmed' values is ever read by the
API or the metrics.

The rates actors (scheduled ticks) and `colmena rates` both run these; the fetch is passed in
(colmena.gateways.rate_sources.fetch) so this module imports no gateway, and a failed fetch is
recorded here instead of raised, since the next tick is the next attempt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import asyncpg
import structlog

from colmena.config import Settings
from colmena.config.metrics import SCRAPES
from colmena.domain.rate_schedule import CARACAS
from colmena.domain.rates import (
    SUCCESSES,
    AcceptRefused,
    Gate,
    Observation,
    RateSourceError,
    Source,
    check_acceptance,
    judge,
    repeat_of,
    summarize,
    tick_expired,
)
from colmena.store import rates as store
from colmena.store.rates import RateRow, SourceHealth

log = structlog.get_logger(__name__)

Fetch = Callable[[Source, Settings, date], Awaitable[list[Observation]]]


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


def gate_of(settings: Settings) -> Gate:
    return Gate(
        bounds=settings.rates_bounds,
        max_change_pct=settings.rates_max_change_pct,
        confirm_tolerance_pct=settings.rates_confirm_tolerance_pct,
    )


async def keep(
    conn: asyncpg.Connection,
    source: Source,
    observation: Observation,
    gate: Gate,
    *,
    today: date,
    sandbox: bool = False,
) -> PairResult:
    """Store one observation as the rules decide (the caller holds the source lock and the
    transaction). A `sandbox` observation is stored marked so; a sandbox value seen again never
    stands for a real one, nor a real one for a sandbox value."""
    pair = observation.pair
    kept = await store.latest_kept(conn, source, pair)
    repeated = repeat_of(source, observation, kept if kept and kept.sandbox == sandbox else None)
    if kept is not None and repeated == "confirmed":
        row = await store.confirm(
            conn, kept.id, by="scrape", reason="seen again by the next scrape"
        )
        return PairResult(pair, repeated, row)
    if kept is not None and repeated == "unchanged":
        await store.touch_seen(conn, kept.id)
        return PairResult(pair, repeated, kept)
    published = await store.latest_published(conn, source, pair)
    pending = await store.pending_suspect(conn, source, pair, published.id if published else 0)
    verdict = judge(source, observation, gate, today=today, published=published, pending=pending)
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
        sandbox=sandbox,
    )
    if verdict.confirms_suspect and pending is not None:
        await store.confirm(conn, pending.id, by="scrape", reason=f"confirmed by rate {row.id}")
    return PairResult(pair, verdict.verdict.value, row)


async def scrape(
    source: Source,
    conn: asyncpg.Connection,
    settings: Settings,
    *,
    fetch: Fetch,
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
        now = datetime.now(UTC)
        if tick_expired(scheduled_at, now=now, expiry_s=settings.rates_tick_expiry_s):
            age = (now - scheduled_at).total_seconds()
            return await _skip_expired(conn, source, run_key, age)
    today = datetime.now(CARACAS).date()
    try:
        observations, error = await fetch(source, settings, today), None
    except RateSourceError as exc:
        observations, error = [], exc
    health: SourceHealth | None = None
    async with conn.transaction():
        await store.lock_source(conn, source)
        if run_key is not None and await store.run_done(conn, source, run_key):
            return ScrapeReport(source, "duplicate")
        report = ScrapeReport(source, "")
        if error is not None:
            report.outcome, report.error = error.outcome, str(error)
        else:
            gate = gate_of(settings)
            sandbox = source.value in settings.rates_sandbox_sources
            report.results = [
                await keep(conn, source, obs, gate, today=today, sandbox=sandbox)
                for obs in observations
            ]
            report.outcome = summarize(result.action for result in report.results)
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


def _log_failure(report: ScrapeReport, health: SourceHealth) -> None:
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


async def accept(conn: asyncpg.Connection, rate_id: int) -> tuple[RateRow, bool]:
    """Publish a suspect on an operator's word; returns (row, changed). AcceptRefused says why
    not (colmena.domain.rates.check_acceptance)."""
    async with conn.transaction():
        source = await store.source_of(conn, rate_id)
        if source is None:
            raise AcceptRefused(f"no rate #{rate_id}")
        await store.lock_source(conn, source)  # the scrape's lock order: source, then rates
        row = await store.get_for_update(conn, rate_id)
        if row is None:  # rates rows are never deleted, but the store's answer says maybe
            raise AcceptRefused(f"no rate #{rate_id}")
        newest = await store.latest_published(conn, row.source, row.pair)
        if not check_acceptance(row, newest):
            return row, False
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
