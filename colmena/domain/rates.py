"""Exchange-rate rules: the representative P2P rate, the sanity gate, and what a scrape keeps.

Everything here is pure (plain values in, decisions out) so the scrape can call it between the
gateway and the store, and tests can pin every edge without a network or a database. Money is
Decimal end to end: a float would silently drop the BCV's eighth decimal.

What a scrape decides, in order: a source's answer becomes observations (`binance_observation`
refuses an empty book); an observation the BCV shows again unchanged writes no row
(`repeat_of`); any other is judged against the last published value (`judge`); the scrape's
outcome is summarised from the pairs (`summarize`). An operator may publish a suspect
(`check_acceptance`), never a rejected or overtaken value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar, Protocol

from colmena.errors import ColmenaError

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


# --- what a scrape keeps --------------------------------------------------------------------------

PUBLISHED = frozenset({"accepted", "confirmed"})  # the only statuses any reader is shown
SUCCESSES = frozenset({"accepted", "unchanged", "suspect"})  # any other outcome counts to stale
BINANCE_PAIR = "USDT/VES"


class Source(StrEnum):
    BCV = "bcv"
    BINANCE = "binance"


class RateSourceError(ColmenaError):
    """A source showed nothing usable this time: a gateway's refusal or an empty book.

    The scrape records it (`outcome` is the metric label) rather than failing its message: the
    gateway already retried what can heal, and the next tick is the next attempt. Permanent
    unless a subclass or an instance says it may heal, which the gateway's retry loop reads.
    """

    outcome: ClassVar[str] = "error"
    retryable = False


class EmptyBookError(RateSourceError):
    """Binance answered, but a side had no trustworthy price: nothing is written."""

    outcome = "empty"


class AcceptRefused(ColmenaError):
    """An operator asked to publish something that must not be (the message says why)."""

    retryable = False


@dataclass(frozen=True, slots=True)
class Observation:
    """One value a source showed: VES per unit of `pair`, valid from `effective_date`."""

    pair: str
    value: Decimal
    effective_date: date
    buy: Decimal | None = None
    sell: Decimal | None = None


class StoredRate(Protocol):
    """A kept value as the rules read it (colmena.store.rates.RateRow is one)."""

    @property
    def id(self) -> int: ...

    @property
    def value(self) -> Decimal: ...

    @property
    def effective_date(self) -> date: ...

    @property
    def status(self) -> str: ...

    @property
    def reason(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Gate:
    """The sanity gate's limits: (min, max) per pair (a pair without bounds is rejected), the
    move that makes a value suspect, and how close a later scrape must come to confirm it."""

    bounds: Mapping[str, tuple[Decimal, Decimal]]
    max_change_pct: Decimal = DEFAULT_MAX_CHANGE_PCT
    confirm_tolerance_pct: Decimal = DEFAULT_CONFIRM_TOLERANCE_PCT


def binance_observation(
    buy_quotes: Iterable[Quote], sell_quotes: Iterable[Quote], *, top_n: int, today: date
) -> Observation:
    """The USDT/VES mid of the book, valid today; EmptyBookError when a side has nothing."""
    rate = market_rate(buy_quotes, sell_quotes, top_n=top_n)
    if rate is None:
        raise EmptyBookError("no trustworthy advert on one side of the book")
    return Observation(BINANCE_PAIR, rate.mid, today, buy=rate.buy, sell=rate.sell)


def repeat_of(source: Source, observation: Observation, kept: StoredRate | None) -> str | None:
    """'unchanged' or 'confirmed' when the BCV shows its newest kept value again, else None.

    The BCV shows the same value all day: seeing it again writes no row, it only restarts the
    value's age, and publishes it if it was still suspect (a later scrape agreeing). Every
    Binance reading is a fresh look at a moving market, so each one is judged.
    """
    if source is not Source.BCV or kept is None:
        return None
    if kept.value != observation.value or kept.effective_date != observation.effective_date:
        return None
    return "confirmed" if kept.status == "suspect" else "unchanged"


def judge(
    source: Source,
    observation: Observation,
    gate: Gate,
    *,
    today: date,
    published: StoredRate | None,
    pending: StoredRate | None,
) -> SanityResult:
    """The sanity gate for one new value, against the last published one and the suspect that
    followed it (if any): bounds, the BCV's value date, both Binance sides, then the move."""
    bounds = gate.bounds.get(observation.pair)
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
                f"effective date {observation.effective_date} precedes the published "
                f"{published.effective_date}",
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
        max_change_pct=gate.max_change_pct,
        confirm_tolerance_pct=gate.confirm_tolerance_pct,
    )


def summarize(actions: Iterable[str]) -> str:
    """A scrape's outcome from what became of each pair: rejected only when nothing survived."""
    seen = set(actions)
    if seen <= {"rejected"}:
        return "rejected"
    if seen & {"accepted", "confirmed"}:
        return "accepted"
    if "suspect" in seen:
        return "suspect"
    return "unchanged"


def tick_expired(scheduled_at: datetime, *, now: datetime, expiry_s: float) -> bool:
    """A tick older than `expiry_s` is skipped, not scraped: an outage is never replayed as a
    burst, and the next tick scrapes anyway."""
    return (now - scheduled_at).total_seconds() > expiry_s


def check_acceptance(row: StoredRate, newest: StoredRate | None) -> bool:
    """Whether an operator's word publishes `row`: False when it already is published.

    AcceptRefused for a rejected value (out of bounds or misdated: garbage by definition) and
    for a suspect that a newer published value (`newest` of its series) has overtaken:
    publishing it would show an older rate.
    """
    if row.status in PUBLISHED:
        return False
    if row.status == "rejected":
        raise AcceptRefused(
            f"rate #{row.id} was rejected ({row.reason}); rejected values are never published"
        )
    if newest is not None and newest.id > row.id:
        raise AcceptRefused(f"rate #{row.id} is outdated: #{newest.id} was published after it")
    return True
