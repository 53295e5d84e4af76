"""Geometry of the operator console's small charts: numbers in, SVG coordinates out.

The console draws its charts as inline SVG on the server (its CSP allows no script to draw
them), so the arithmetic lives here, pure, where it is tested without a browser: bars for a
count per hour, polylines for rate series. Every chart also gets its data as text (the
template's table), so nothing here is the only way to read a number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

PADDING = 4.0


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class BarChart:
    width: float
    height: float
    bars: tuple[Bar, ...]
    maximum: int

    @property
    def total(self) -> int:
        return sum(bar.value for bar in self.bars)


@dataclass(frozen=True)
class Line:
    name: str
    points: tuple[tuple[float, float], ...]
    values: tuple[tuple[date, Decimal], ...]

    @property
    def svg_points(self) -> str:
        """The `points` attribute of an SVG polyline."""
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in self.points)


@dataclass(frozen=True)
class LineChart:
    width: float
    height: float
    lines: tuple[Line, ...]
    low: Decimal | None
    high: Decimal | None
    first: date
    last: date


def hour_buckets(
    start: datetime, hours: int, counts: Mapping[datetime, int]
) -> list[tuple[datetime, int]]:
    """One (hour, count) per hour from `start` on, hours without a count as zero.

    `counts` is keyed by the hour's start (as `date_trunc('hour', ...)` gives it); `start` is
    truncated to its hour first.
    """
    first = start.replace(minute=0, second=0, microsecond=0)
    return [
        (first + timedelta(hours=index), counts.get(first + timedelta(hours=index), 0))
        for index in range(hours)
    ]


def bar_chart(
    values: Sequence[tuple[str, int]], *, width: float = 480.0, height: float = 120.0
) -> BarChart:
    """Bars side by side, scaled to the largest value; a zero is a bar of no height.

    A gap of a fifth of each slot separates the bars; the chart is all zeros when every value
    is (no division by zero, nothing drawn).
    """
    if any(value < 0 for _, value in values):
        raise ValueError("bar values are counts: never negative")
    maximum = max((value for _, value in values), default=0)
    usable = height - 2 * PADDING
    slot = (width - 2 * PADDING) / len(values) if values else 0.0
    bars = []
    for index, (label, value) in enumerate(values):
        bar_height = usable * value / maximum if maximum else 0.0
        bars.append(
            Bar(
                label=label,
                value=value,
                x=PADDING + index * slot + slot * 0.1,
                y=height - PADDING - bar_height,
                width=slot * 0.8,
                height=bar_height,
            )
        )
    return BarChart(width=width, height=height, bars=tuple(bars), maximum=maximum)


def line_chart(
    series: Mapping[str, Sequence[tuple[date, Decimal]]],
    *,
    first: date,
    last: date,
    width: float = 480.0,
    height: float = 160.0,
) -> LineChart:
    """Every series on one shared scale: x by day from `first` to `last`, y from the lowest to
    the highest value of all series (a flat series sits in the middle).

    Points outside the day range are dropped; each series is drawn in date order.
    """
    if last < first:
        raise ValueError("the last day is before the first")
    kept = {
        name: sorted((day, value) for day, value in points if first <= day <= last)
        for name, points in series.items()
    }
    every = [value for points in kept.values() for _, value in points]
    low, high = (min(every), max(every)) if every else (None, None)
    days = (last - first).days or 1
    inner_w, inner_h = width - 2 * PADDING, height - 2 * PADDING

    def x_of(day: date) -> float:
        return PADDING + inner_w * (day - first).days / days

    def y_of(value: Decimal) -> float:
        if low is None or high is None or high == low:
            return PADDING + inner_h / 2
        return PADDING + inner_h * float((high - value) / (high - low))

    lines = tuple(
        Line(
            name=name,
            points=tuple((x_of(day), y_of(value)) for day, value in points),
            values=tuple(points),
        )
        for name, points in kept.items()
    )
    return LineChart(
        width=width, height=height, lines=lines, low=low, high=high, first=first, last=last
    )
