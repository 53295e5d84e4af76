"""Which backups to keep: grandfather-father-son, and when the daily one is due.

Plain data in, decisions out; the clock and the time zone are arguments. The rules, as restic's
`forget --keep-daily/weekly/monthly` reads them:

- daily N keeps the newest backup of each of the N most recent days that have a backup; weekly
  and monthly do the same for ISO weeks and calendar months. Days, weeks and months are the
  operator's local ones. A backup kept by any rule is kept.
- Periods are counted over the backups that exist, not the calendar: when backups stop for a
  while, pruning never deletes the last ones left.
- The newest backup is always kept, and so is any dated after `now` (a clock that moved): a
  rule never deletes what it cannot place.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

PeriodKey = Callable[[datetime], Hashable]


@dataclass(frozen=True)
class Retention:
    daily: int
    weekly: int
    monthly: int


@dataclass(frozen=True)
class Candidate:
    """A good backup: its identity (id or name) and when it finished (aware datetime)."""

    ident: str
    taken_at: datetime


@dataclass(frozen=True)
class Decision:
    keep: list[Candidate]
    delete: list[Candidate]


def _day(at: datetime) -> Hashable:
    return at.date()


def _week(at: datetime) -> Hashable:
    year, week, _ = at.isocalendar()
    return (year, week)


def _month(at: datetime) -> Hashable:
    return (at.year, at.month)


def _newest_per_period(
    newest_first: Sequence[tuple[Candidate, datetime]], period: PeriodKey, count: int
) -> set[str]:
    kept: set[str] = set()
    seen: set[Hashable] = set()
    for candidate, local in newest_first:
        if len(seen) >= count:
            break
        key = period(local)
        if key not in seen:
            seen.add(key)
            kept.add(candidate.ident)
    return kept


def decide(
    backups: Iterable[Candidate], rules: Retention, *, now: datetime, zone: tzinfo
) -> Decision:
    """Split `backups` into those to keep and those to delete, newest first in each."""
    ordered = sorted(backups, key=lambda c: (c.taken_at, c.ident), reverse=True)
    future = {c.ident for c in ordered if c.taken_at > now}
    placed = [(c, c.taken_at.astimezone(zone)) for c in ordered if c.ident not in future]
    kept = set(future)
    if ordered:
        kept.add(ordered[0].ident)
    kept |= _newest_per_period(placed, _day, rules.daily)
    kept |= _newest_per_period(placed, _week, rules.weekly)
    kept |= _newest_per_period(placed, _month, rules.monthly)
    return Decision(
        keep=[c for c in ordered if c.ident in kept],
        delete=[c for c in ordered if c.ident not in kept],
    )


def latest_slot(now: datetime, hour: int, zone: tzinfo) -> datetime:
    """The most recent moment, at or before `now`, when the local clock read `hour`:00.

    A daily job is due when its last run is older than this. On a day whose `hour` falls in a
    clock change the slot is taken as the local wall time, as zoneinfo resolves it.
    """
    local = now.astimezone(zone)
    today = datetime.combine(local.date(), time(hour), tzinfo=zone)
    return (
        today
        if today <= local
        else datetime.combine(local.date() - timedelta(days=1), time(hour), tzinfo=zone)
    )


def report_day(now: datetime, hour: int, zone: tzinfo) -> date:
    """The local day the daily report sent at the latest slot covers: the one before it."""
    return latest_slot(now, hour, zone).date() - timedelta(days=1)


def local_day_bounds(day: date, zone: tzinfo) -> tuple[datetime, datetime]:
    """[start, end) of a local day as aware datetimes (23 or 25 hours on clock-change days)."""
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return start, end
