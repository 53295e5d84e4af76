"""Exchange-rate arithmetic: the representative P2P rate and the sanity gate.

Everything here is pure (plain values in, plain values out) so the scrape
actor can call it between the gateway and the store, and tests can pin every
edge without a network or a database. Money is Decimal end to end: a float
would silently drop the BCV's eighth decimal.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

DEFAULT_TOP_N = 10
DEFAULT_FENCE_K = Decimal("2.5")
DEFAULT_MAX_CHANGE_PCT = Decimal("20")
DEFAULT_CONFIRM_TOLERANCE_PCT = Decimal("5")
_HUNDRED = Decimal(100)
_TWO = Decimal(2)


class Quote(Protocol):
    """One market offer as the representative-rate maths needs it.

    A Protocol rather than a concrete class so the Binance gateway's advert
    type can be passed straight in without the domain importing a gateway.
    """

    @property
    def price(self) -> Decimal: ...

    @property
    def volume(self) -> Decimal: ...

    @property
    def promoted(self) -> bool: ...

    @property
    def eligible(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class MarketRate:
    """Buy (what a taker pays per USDT), sell (what a taker gets) and their mid."""

    buy: Decimal
    sell: Decimal
    mid: Decimal


def median(values: Sequence[Decimal]) -> Decimal:
    """Median by exact Decimal arithmetic (statistics.median would be fine too,
    but this keeps the even-count average visibly exact)."""
    if not values:
        raise ValueError("median of an empty sequence")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / _TWO


def quantile(ordered: Sequence[Decimal], p: Decimal) -> Decimal:
    """Linear-interpolation quantile of already sorted values (the 'inclusive'
    method: numpy's default), exact in Decimal."""
    if not ordered:
        raise ValueError("quantile of an empty sequence")
    position = (len(ordered) - 1) * p
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def iqr_fence(prices: Iterable[Decimal], k: Decimal = DEFAULT_FENCE_K) -> tuple[Decimal, Decimal]:
    """(Q1 - k*IQR, Q3 + k*IQR): anything outside is a fat-fingered or bait ad."""
    ordered = sorted(prices)
    q1 = quantile(ordered, Decimal("0.25"))
    q3 = quantile(ordered, Decimal("0.75"))
    spread = q3 - q1
    return q1 - k * spread, q3 + k * spread


def representative_price(
    quotes: Iterable[Quote],
    *,
    top_n: int = DEFAULT_TOP_N,
    fence_k: Decimal = DEFAULT_FENCE_K,
) -> Decimal | None:
    """One side's price: drop promoted and ineligible ads, fence outliers by
    IQR, then take the median price of the top_n ads by tradable volume.

    Volume ranks before the median so a swarm of tiny ads cannot set the
    price; the fence runs before ranking so one huge bait ad cannot either.
    None means there is nothing trustworthy to publish.
    """
    if top_n < 1:
        raise ValueError("top_n must be at least 1")
    usable = [
        q
        for q in quotes
        if q.eligible and not q.promoted and q.price.is_finite() and q.price > 0 and q.volume > 0
    ]
    if not usable:
        return None
    low, high = iqr_fence((q.price for q in usable), fence_k)
    fenced = [q for q in usable if low <= q.price <= high]
    ranked = sorted(fenced, key=lambda q: (-q.volume, q.price))[:top_n]
    return median([q.price for q in ranked])


def market_rate(
    buy_quotes: Iterable[Quote],
    sell_quotes: Iterable[Quote],
    *,
    top_n: int = DEFAULT_TOP_N,
    fence_k: Decimal = DEFAULT_FENCE_K,
) -> MarketRate | None:
    """Both sides or nothing: a mid computed from one side would be a lie."""
    buy = representative_price(buy_quotes, top_n=top_n, fence_k=fence_k)
    sell = representative_price(sell_quotes, top_n=top_n, fence_k=fence_k)
    if buy is None or sell is None:
        return None
    return MarketRate(buy=buy, sell=sell, mid=(buy + sell) / _TWO)


class Verdict(StrEnum):
    """What the store should do with a scraped value."""

    ACCEPTED = "accepted"  # store and publish
    SUSPECT = "suspect"  # store, do not publish until confirmed
    REJECTED = "rejected"  # garbage: never publish


@dataclass(frozen=True, slots=True)
class SanityResult:
    verdict: Verdict
    reason: str
    confirms_suspect: bool = False


def percent_change(old: Decimal, new: Decimal) -> Decimal:
    """Absolute move from old to new, in percent of old."""
    return abs(new - old) / old * _HUNDRED


def check_rate(
    value: Decimal,
    *,
    lower: Decimal,
    upper: Decimal,
    last_accepted: Decimal | None,
    pending_suspect: Decimal | None = None,
    max_change_pct: Decimal = DEFAULT_MAX_CHANGE_PCT,
    confirm_tolerance_pct: Decimal = DEFAULT_CONFIRM_TOLERANCE_PCT,
) -> SanityResult:
    """Gate a scraped value before it can reach a price.

    Rejected: not a finite positive Decimal, or outside [lower, upper].
    Suspect: moved more than max_change_pct from the last accepted value.
    A big move is accepted (confirms_suspect=True) when the previous scrape
    already saw it, i.e. the value lies within confirm_tolerance_pct of the
    pending suspect: two independent scrapes agreeing is the confirmation.
    """
    if not isinstance(value, Decimal):
        return SanityResult(Verdict.REJECTED, f"not a Decimal: {type(value).__name__}")
    if not value.is_finite():
        return SanityResult(Verdict.REJECTED, "not finite")
    if value <= 0:
        return SanityResult(Verdict.REJECTED, "not positive")
    if not lower <= value <= upper:
        return SanityResult(Verdict.REJECTED, f"outside bounds [{lower}, {upper}]")
    if last_accepted is None or last_accepted <= 0:
        return SanityResult(Verdict.ACCEPTED, "no previous accepted value")
    move = percent_change(last_accepted, value)
    if move <= max_change_pct:
        return SanityResult(Verdict.ACCEPTED, f"moved {move:.2f}%")
    confirmed = (
        pending_suspect is not None
        and pending_suspect > 0
        and percent_change(pending_suspect, value) <= confirm_tolerance_pct
    )
    if confirmed:
        return SanityResult(
            Verdict.ACCEPTED, f"moved {move:.2f}%, confirmed by the previous scrape", True
        )
    return SanityResult(
        Verdict.SUSPECT, f"moved {move:.2f}% (> {max_change_pct}%) from the last accepted value"
    )


def check_effective_date(
    effective: date,
    today: date,
    *,
    max_ahead_days: int = 7,
    max_behind_days: int = 10,
) -> SanityResult:
    """The BCV publishes in the afternoon the rate valid on the next business
    day (a long weekend or Carnival pushes it several days ahead); a date far
    outside that window means the page is broken, not that time moved."""
    delta = (effective - today).days
    if delta > max_ahead_days:
        return SanityResult(Verdict.REJECTED, f"effective date {effective} is {delta} days ahead")
    if -delta > max_behind_days:
        return SanityResult(Verdict.REJECTED, f"effective date {effective} is {-delta} days old")
    return SanityResult(Verdict.ACCEPTED, f"effective date {effective}")
