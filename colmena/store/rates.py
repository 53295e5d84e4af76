"""Queries for exchange rates: the history rows, each source's health, and the scrape log.

A rate is *published* when its status is 'accepted' or 'confirmed'; every reader outside the
scrape itself (API, metrics, conversions) goes through the `published` queries here, so a
'suspect' or 'rejected' value cannot leak into a price by a forgotten WHERE clause.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import asyncpg

from colmena.domain.rates import PUBLISHED, Source

SOURCES = tuple(source.value for source in Source)

_COLUMNS = (
    "id, source, pair, value, buy, sell, effective_date, fetched_at, last_seen_at, status, reason, "
    "decided_by, decided_at, sandbox"
)


@dataclass(frozen=True, slots=True)
class RateRow:
    id: int
    source: str
    pair: str
    value: Decimal
    buy: Decimal | None
    sell: Decimal | None
    effective_date: date
    fetched_at: datetime
    last_seen_at: datetime
    status: str
    reason: str
    decided_by: str | None
    decided_at: datetime | None
    sandbox: bool  # scraped from `colmena dev`'s recorded sandbox: sample data, not a rate

    @property
    def published(self) -> bool:
        return self.status in PUBLISHED


@dataclass(frozen=True, slots=True)
class SourceHealth:
    source: str
    consecutive_failures: int
    stale: bool
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_outcome: str | None
    last_error: str | None


def _rate(row: asyncpg.Record | None) -> RateRow | None:
    return RateRow(**dict(row)) if row is not None else None


def _health(row: asyncpg.Record) -> SourceHealth:
    return SourceHealth(**dict(row))


# --- the scrape's side: serialised per source by lock_source ------------------------------------


async def lock_source(conn: asyncpg.Connection, source: str) -> SourceHealth:
    """Lock the source's health row for the caller's transaction: two scrapes of one source
    (a duplicate message, the CLI during a scheduled run) decide one after the other."""
    row = await conn.fetchrow("SELECT * FROM rate_sources WHERE source = $1 FOR UPDATE", source)
    if row is None:
        raise ValueError(f"unknown rate source {source!r}")
    return _health(row)


async def run_done(conn: asyncpg.Connection, source: str, run_key: str) -> bool:
    query = "SELECT EXISTS (SELECT 1 FROM rate_scrapes WHERE source = $1 AND run_key = $2)"
    return bool(await conn.fetchval(query, source, run_key))


async def record_scrape(
    conn: asyncpg.Connection, source: str, run_key: str | None, outcome: str, detail: str | None
) -> None:
    await conn.execute(
        "INSERT INTO rate_scrapes (source, run_key, outcome, detail) VALUES ($1, $2, $3, $4)",
        source,
        run_key,
        outcome,
        detail[:500] if detail else None,
    )


async def latest_kept(conn: asyncpg.Connection, source: str, pair: str) -> RateRow | None:
    """The newest value of a series that was not rejected (published or still suspect)."""
    return _rate(
        await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM rates "
            "WHERE source = $1 AND pair = $2 AND status <> 'rejected' "
            "ORDER BY id DESC LIMIT 1",
            source,
            pair,
        )
    )


async def latest_published(conn: asyncpg.Connection, source: str, pair: str) -> RateRow | None:
    return _rate(
        await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM rates "
            "WHERE source = $1 AND pair = $2 AND status = ANY($3::text[]) "
            "ORDER BY id DESC LIMIT 1",
            source,
            pair,
            list(PUBLISHED),
        )
    )


async def pending_suspect(
    conn: asyncpg.Connection, source: str, pair: str, after_id: int
) -> RateRow | None:
    """The newest suspect recorded after the last published value: the one a scrape can confirm."""
    return _rate(
        await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM rates "
            "WHERE source = $1 AND pair = $2 AND status = 'suspect' AND id > $3 "
            "ORDER BY id DESC LIMIT 1",
            source,
            pair,
            after_id,
        )
    )


async def insert(
    conn: asyncpg.Connection,
    *,
    source: str,
    pair: str,
    value: Decimal,
    effective_date: date,
    status: str,
    reason: str,
    buy: Decimal | None = None,
    sell: Decimal | None = None,
    sandbox: bool = False,
) -> RateRow:
    row = await conn.fetchrow(
        f"""
        INSERT INTO rates (source, pair, value, buy, sell, effective_date, status, reason, sandbox)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        RETURNING {_COLUMNS}
        """,
        source,
        pair,
        value,
        buy,
        sell,
        effective_date,
        status,
        reason[:500],
        sandbox,
    )
    return RateRow(**dict(row))


async def confirm(conn: asyncpg.Connection, rate_id: int, *, by: str, reason: str) -> RateRow:
    """Publish a suspect: a later scrape saw it again, or an operator vouched for it."""
    row = await conn.fetchrow(
        f"""
        UPDATE rates
        SET status = 'confirmed', decided_by = $2, decided_at = now(), last_seen_at = now(),
            reason = reason || '; ' || $3
        WHERE id = $1 AND status = 'suspect'
        RETURNING {_COLUMNS}
        """,
        rate_id,
        by,
        reason,
    )
    if row is None:
        raise ValueError(f"rate {rate_id} is not a suspect")
    return RateRow(**dict(row))


async def touch_seen(conn: asyncpg.Connection, rate_id: int) -> None:
    """An unchanged value seen again: its age restarts, no new row is written."""
    await conn.execute("UPDATE rates SET last_seen_at = now() WHERE id = $1", rate_id)


async def source_of(conn: asyncpg.Connection, rate_id: int) -> str | None:
    """The source of a rate, read without a lock: what the caller locks first (the scrape's
    lock order is the source, then its rate rows)."""
    source = await conn.fetchval("SELECT source FROM rates WHERE id = $1", rate_id)
    return str(source) if source is not None else None


async def get_for_update(conn: asyncpg.Connection, rate_id: int) -> RateRow | None:
    return _rate(
        await conn.fetchrow(f"SELECT {_COLUMNS} FROM rates WHERE id = $1 FOR UPDATE", rate_id)
    )


async def note_success(conn: asyncpg.Connection, source: str, outcome: str) -> None:
    await conn.execute(
        "UPDATE rate_sources SET consecutive_failures = 0, stale = false, last_success_at = now(), "
        "last_outcome = $2, last_error = NULL WHERE source = $1",
        source,
        outcome,
    )


async def note_failure(
    conn: asyncpg.Connection, source: str, outcome: str, error: str, *, stale_after: int
) -> SourceHealth:
    """Count one more failed scrape; the source turns stale at `stale_after` in a row."""
    row = await conn.fetchrow(
        """
        UPDATE rate_sources
        SET consecutive_failures = consecutive_failures + 1,
            stale = consecutive_failures + 1 >= $4,
            last_failure_at = now(), last_outcome = $2, last_error = $3
        WHERE source = $1
        RETURNING *
        """,
        source,
        outcome,
        error[:500],
        stale_after,
    )
    return _health(row)


# --- readers: published values only -------------------------------------------------------------


async def latest_published_all(conn: asyncpg.Connection) -> list[RateRow]:
    """The newest published value of every (source, pair) series."""
    rows = await conn.fetch(
        f"""
        SELECT DISTINCT ON (source, pair) {_COLUMNS} FROM rates
        WHERE status = ANY($1::text[])
        ORDER BY source, pair, id DESC
        """,
        list(PUBLISHED),
    )
    return [RateRow(**dict(row)) for row in rows]


async def published_history(
    conn: asyncpg.Connection,
    *,
    pair: str,
    source: str | None,
    start: date | None,
    end: date | None,
    before_id: int | None,
    limit: int,
) -> list[RateRow]:
    """Published values of a pair, newest first, `limit` of them below `before_id` (keyset page)."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM rates
        WHERE status = ANY($1::text[]) AND pair = $2
          AND ($3::text IS NULL OR source = $3)
          AND ($4::date IS NULL OR effective_date >= $4)
          AND ($5::date IS NULL OR effective_date <= $5)
          AND ($6::bigint IS NULL OR id < $6)
        ORDER BY id DESC
        LIMIT $7
        """,
        list(PUBLISHED),
        pair,
        source,
        start,
        end,
        before_id,
        limit,
    )
    return [RateRow(**dict(row)) for row in rows]


async def sources(conn: asyncpg.Connection) -> list[SourceHealth]:
    return [_health(row) for row in await conn.fetch("SELECT * FROM rate_sources ORDER BY source")]


# --- operators: everything, suspects and rejections included ------------------------------------


async def recent(
    conn: asyncpg.Connection,
    *,
    source: str | None = None,
    status: str | None = None,
    limit: int = 20,
) -> list[RateRow]:
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM rates
        WHERE ($1::text IS NULL OR source = $1) AND ($2::text IS NULL OR status = $2)
        ORDER BY id DESC LIMIT $3
        """,
        source,
        status,
        limit,
    )
    return [RateRow(**dict(row)) for row in rows]
