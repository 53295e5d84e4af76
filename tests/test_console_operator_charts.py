"""The console charts' geometry: pure, so checked without a browser or a database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from colmena.domain.console_charts import PADDING, bar_chart, hour_buckets, line_chart


def test_hour_buckets_fill_the_hours_without_payments() -> None:
    start = datetime(2026, 3, 1, 10, 42, tzinfo=UTC)
    ten = datetime(2026, 3, 1, 10, tzinfo=UTC)
    counts = {ten: 3, ten + timedelta(hours=2): 5}
    assert hour_buckets(start, 4, counts) == [
        (ten, 3),
        (ten + timedelta(hours=1), 0),
        (ten + timedelta(hours=2), 5),
        (ten + timedelta(hours=3), 0),
    ]


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=48))
def test_bars_fit_the_chart_and_the_tallest_fills_it(values: list[int]) -> None:
    chart = bar_chart([(str(index), value) for index, value in enumerate(values)])
    bottom = chart.height - PADDING
    for bar, value in zip(chart.bars, values, strict=True):
        assert 0 <= bar.height <= chart.height - 2 * PADDING
        assert bar.y + bar.height == pytest.approx(bottom)
        assert PADDING <= bar.x and bar.x + bar.width <= chart.width - PADDING + 1e-9
        assert (bar.height == 0) == (value == 0 or max(values) == 0)
    if max(values):
        tallest = max(chart.bars, key=lambda bar: bar.value)
        assert tallest.height == pytest.approx(chart.height - 2 * PADDING)
    assert chart.total == sum(values)


def test_bars_of_nothing_and_negative_counts() -> None:
    assert bar_chart([]).bars == ()
    assert all(bar.height == 0 for bar in bar_chart([("a", 0), ("b", 0)]).bars)
    with pytest.raises(ValueError):
        bar_chart([("a", -1)])


def test_lines_share_one_scale_and_drop_days_outside_the_range() -> None:
    first, last = date(2026, 3, 1), date(2026, 3, 11)
    chart = line_chart(
        {
            "bcv": [(date(2026, 3, 11), Decimal("40")), (date(2026, 3, 1), Decimal("30"))],
            "binance": [(date(2026, 3, 6), Decimal("50")), (date(2026, 2, 1), Decimal("99"))],
        },
        first=first,
        last=last,
    )
    bcv, binance = chart.lines
    assert (chart.low, chart.high) == (Decimal("30"), Decimal("50"))
    assert bcv.values == ((first, Decimal("30")), (last, Decimal("40")))  # date order
    assert bcv.points[0] == (PADDING, chart.height - PADDING)  # lowest value, first day
    assert bcv.points[1][0] == pytest.approx(chart.width - PADDING)
    assert binance.points == ((pytest.approx(chart.width / 2), PADDING),)  # highest, mid-range
    assert binance.svg_points == f"{chart.width / 2:.1f},{PADDING:.1f}"


def test_a_flat_or_empty_series_is_drawn_in_the_middle() -> None:
    day = date(2026, 3, 1)
    flat = line_chart({"bcv": [(day, Decimal("36.6"))]}, first=day, last=day)
    assert flat.lines[0].points == ((PADDING, flat.height / 2),)
    empty = line_chart({"bcv": []}, first=day, last=day + timedelta(days=30))
    assert (empty.low, empty.high, empty.lines[0].points) == (None, None, ())
    with pytest.raises(ValueError):
        line_chart({}, first=day, last=day - timedelta(days=1))
