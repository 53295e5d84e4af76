"""The scrape schedule, checked by computing fire times in Caracas time."""

from datetime import UTC, datetime, timedelta

import pytest

from colmena.domain.rate_schedule import (
    CARACAS,
    bcv_trigger,
    binance_trigger,
    next_run_times,
)


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """September 2026 in Caracas: the 5th is a Saturday, the 6th a Sunday, the 7th a Monday."""
    return datetime(2026, 9, day, hour, minute, second, tzinfo=CARACAS)


def test_bcv_runs_at_eight_and_one_skipping_sunday() -> None:
    runs = next_run_times(bcv_trigger(), at(5, 12), 5)

    assert runs == [at(5, 13), at(7, 8), at(7, 13), at(8, 8), at(8, 13)]
    assert all(run.weekday() != 6 for run in runs)


def test_bcv_week_has_twelve_runs_monday_to_saturday() -> None:
    runs = next_run_times(bcv_trigger(), at(7, 0), 13)

    assert [run.strftime("%a %H:%M") for run in runs[:12]] == [
        f"{day} {hour}"
        for day in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
        for hour in ("08:00", "13:00")
    ]
    assert runs[12] == at(14, 8)


def test_a_start_on_a_fire_time_includes_it() -> None:
    assert next_run_times(bcv_trigger(), at(7, 8), 1) == [at(7, 8)]
    assert next_run_times(bcv_trigger(), at(7, 8, 0, 1), 1) == [at(7, 13)]


def test_binance_runs_every_half_hour_from_seven_to_nineteen() -> None:
    runs = next_run_times(binance_trigger(), at(7, 0), 26)

    expected = [at(7, 7) + timedelta(minutes=30 * i) for i in range(25)]
    assert runs[:25] == expected
    assert runs[24] == at(7, 19)
    assert runs[25] == at(8, 7)  # no 19:30, next is Tuesday 07:00


def test_binance_skips_sunday() -> None:
    runs = next_run_times(binance_trigger(), at(5, 18, 10), 4)

    assert runs == [at(5, 18, 30), at(5, 19), at(7, 7), at(7, 7, 30)]


def test_times_are_caracas_whatever_zone_the_start_is_in() -> None:
    start_utc = datetime(2026, 9, 7, 11, 59, tzinfo=UTC)  # 07:59 in Caracas

    (run,) = next_run_times(bcv_trigger(), start_utc, 1)

    assert run == datetime(2026, 9, 7, 12, 0, tzinfo=UTC)
    assert run.tzinfo == CARACAS
    assert run.utcoffset() == timedelta(hours=-4)
    assert (run.hour, run.minute) == (8, 0)


def test_naive_start_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_run_times(bcv_trigger(), datetime(2026, 9, 7, 8), 1)
