"""Grandfather-father-son retention and the daily slot: pure rules, clock and zone injected."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from colmena.domain.backup_retention import (
    Candidate,
    Retention,
    decide,
    latest_slot,
    local_day_bounds,
    report_day,
)

CARACAS = ZoneInfo("America/Caracas")
MEXICO = ZoneInfo("America/Mexico_City")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

moments = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
)
rules = st.builds(
    Retention,
    daily=st.integers(min_value=1, max_value=10),
    weekly=st.integers(min_value=0, max_value=6),
    monthly=st.integers(min_value=0, max_value=14),
)


def candidates(times: list[datetime]) -> list[Candidate]:
    return [Candidate(f"b{i}", at) for i, at in enumerate(times)]


def nightly(days: int, *, hour: int = 7) -> list[Candidate]:
    """One backup a day at `hour` UTC, the newest on NOW's day."""
    return candidates([NOW.replace(hour=hour) - timedelta(days=n) for n in range(days)])


@settings(max_examples=200, deadline=None)
@given(times=st.lists(moments, max_size=60), rule=rules, now=moments)
def test_retention_properties(times: list[datetime], rule: Retention, now: datetime) -> None:
    backups = candidates(times)
    decision = decide(backups, rule, now=now, zone=CARACAS)
    kept = {c.ident for c in decision.keep}
    # A partition of what was given.
    assert kept.isdisjoint(c.ident for c in decision.delete)
    assert len(decision.keep) + len(decision.delete) == len(backups)
    if backups:
        newest = max(backups, key=lambda c: (c.taken_at, c.ident))
        assert newest.ident in kept  # never the last backup left
    assert all(c.ident in kept for c in backups if c.taken_at > now)
    placed = [c for c in decision.keep if c.taken_at <= now]
    assert len(placed) <= max(1, rule.daily + rule.weekly + rule.monthly)
    # The N most recent days with a backup each keep their newest.
    by_day: dict[date, Candidate] = {}
    for c in sorted(backups, key=lambda c: (c.taken_at, c.ident)):
        if c.taken_at <= now:
            by_day[c.taken_at.astimezone(CARACAS).date()] = c
    for day in sorted(by_day, reverse=True)[: rule.daily]:
        assert by_day[day].ident in kept
    # Pruning what is kept again deletes nothing more.
    again = decide(decision.keep, rule, now=now, zone=CARACAS)
    assert again.delete == []


def test_thirty_nightly_backups_keep_seven_days_four_weeks_and_the_months() -> None:
    decision = decide(nightly(40), Retention(daily=7, weekly=4, monthly=12), now=NOW, zone=UTC)
    kept_days = sorted({c.taken_at.date() for c in decision.keep}, reverse=True)
    assert kept_days[:7] == [NOW.date() - timedelta(days=n) for n in range(7)]
    # Weekly: the newest of each of the last four ISO weeks (Sundays, and today's Tuesday).
    sundays = {date(2026, 11, 29), date(2026, 11, 22), date(2026, 11, 15)}
    assert sundays <= set(kept_days)
    # Monthly: the newest of November (Nov 30) and of October (Oct 31), oldest month kept.
    assert {date(2026, 11, 30), date(2026, 10, 31)} <= set(kept_days)
    assert len(decision.keep) == len(set(kept_days))
    assert len(decision.delete) == 40 - len(decision.keep)


def test_backups_that_stopped_long_ago_are_not_all_deleted() -> None:
    old = candidates([NOW - timedelta(days=400 + n) for n in range(5)])
    decision = decide(old, Retention(daily=2, weekly=0, monthly=0), now=NOW, zone=UTC)
    assert [c.ident for c in decision.keep] == ["b0", "b1"]


def test_days_are_the_operators_local_days() -> None:
    # 03:00 and 05:00 UTC on Dec 1: one day in UTC, but Nov 30 23:00 and Dec 1 01:00 in Caracas.
    pair = candidates([datetime(2026, 12, 1, 3, tzinfo=UTC), datetime(2026, 12, 1, 5, tzinfo=UTC)])
    two_days = Retention(daily=2, weekly=0, monthly=0)
    assert len(decide(pair, two_days, now=NOW, zone=CARACAS).keep) == 2
    assert [c.ident for c in decide(pair, two_days, now=NOW, zone=UTC).keep] == ["b1"]


def test_latest_slot_and_the_report_day() -> None:
    # 12:00 UTC = 08:00 in Caracas: the 07:00 slot was an hour ago, the 09:00 one yesterday.
    assert latest_slot(NOW, 7, CARACAS) == datetime(2026, 12, 1, 11, tzinfo=UTC)
    assert latest_slot(NOW, 9, CARACAS) == datetime(2026, 11, 30, 13, tzinfo=UTC)
    assert latest_slot(datetime(2026, 12, 1, 11, tzinfo=UTC), 7, CARACAS) == datetime(
        2026, 12, 1, 11, tzinfo=UTC
    )
    assert report_day(NOW, 7, CARACAS) == date(2026, 11, 30)
    assert report_day(NOW, 9, CARACAS) == date(2026, 11, 29)


@given(now=moments, hour=st.integers(min_value=0, max_value=23))
def test_the_slot_is_never_in_the_future_nor_more_than_a_day_old(now: datetime, hour: int) -> None:
    slot = latest_slot(now, hour, MEXICO)
    assert slot <= now
    assert now - slot < timedelta(hours=25)


def test_local_day_bounds() -> None:
    start, end = local_day_bounds(date(2026, 11, 30), CARACAS)
    assert start == datetime(2026, 11, 30, 4, tzinfo=UTC)
    assert end - start == timedelta(days=1)
