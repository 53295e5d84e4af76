"""The rate rules of colmena.domain.rates as pure functions: no network, no database.

What a scrape keeps (repeat_of, judge, summarize), when a tick is too old, what an operator may
publish (check_acceptance) and when a Binance book is empty. Properties are checked with
Hypothesis where one exists; the examples pin the messages operators read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from colmena.domain.rates import (
    BINANCE_PAIR,
    AcceptRefused,
    EmptyBookError,
    Gate,
    Observation,
    Source,
    Verdict,
    binance_observation,
    check_acceptance,
    judge,
    repeat_of,
    summarize,
    tick_expired,
)

TODAY = date(2026, 9, 7)
LOWER, UPPER = Decimal(1), Decimal(100000)
GATE = Gate(bounds={"USD/VES": (LOWER, UPPER), BINANCE_PAIR: (LOWER, UPPER)})


@dataclass(frozen=True)
class Row:
    """A stored rate as the rules read it (the store's RateRow has the same fields)."""

    id: int
    value: Decimal
    effective_date: date = TODAY
    status: str = "accepted"
    reason: str = "seeded"


@dataclass(frozen=True)
class Advert:
    price: Decimal
    volume: Decimal = Decimal(1)
    promoted: bool = False
    eligible: bool = True


def usd(value: str | Decimal, effective: date = TODAY) -> Observation:
    return Observation("USD/VES", Decimal(value), effective)


in_bounds = st.decimals(min_value=LOWER, max_value=UPPER, places=8)
out_of_bounds = st.one_of(
    st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("0.99999999"), places=8),
    st.decimals(min_value=Decimal("100000.00000001"), max_value=Decimal(10**12), places=8),
    st.sampled_from([Decimal(0), Decimal(-5), Decimal("NaN"), Decimal("Infinity")]),
)
sources = st.sampled_from(list(Source))
actions = st.sampled_from(["accepted", "confirmed", "suspect", "rejected", "unchanged"])


# --- judge -------------------------------------------------------------------------------------


@given(source=sources, value=out_of_bounds, published=st.none() | in_bounds)
def test_a_value_outside_its_bounds_is_always_rejected(
    source: Source, value: Decimal, published: Decimal | None
) -> None:
    last = Row(1, published) if published is not None else None

    verdict = judge(source, usd(value), GATE, today=TODAY, published=last, pending=None)

    assert verdict.verdict is Verdict.REJECTED


@given(source=sources, value=in_bounds)
def test_the_first_value_inside_its_bounds_is_accepted(source: Source, value: Decimal) -> None:
    verdict = judge(source, usd(value), GATE, today=TODAY, published=None, pending=None)

    assert verdict.verdict is Verdict.ACCEPTED and not verdict.confirms_suspect


@given(
    last=st.decimals(min_value=Decimal(100), max_value=Decimal(1000), places=2),
    move_pct=st.decimals(min_value=Decimal(-20), max_value=Decimal(60), places=2),
)
def test_a_move_up_to_the_limit_is_accepted_and_a_bigger_one_is_suspect(
    last: Decimal, move_pct: Decimal
) -> None:
    value = last * (1 + move_pct / 100)

    verdict = judge(Source.BCV, usd(value), GATE, today=TODAY, published=Row(1, last), pending=None)

    expected = Verdict.ACCEPTED if abs(move_pct) <= GATE.max_change_pct else Verdict.SUSPECT
    assert verdict.verdict is expected


def test_a_big_move_the_previous_scrape_saw_is_confirmed() -> None:
    published, pending = Row(1, Decimal(800)), Row(2, Decimal(1000), status="suspect")

    agreeing = judge(
        Source.BINANCE,
        Observation(BINANCE_PAIR, Decimal(1030), TODAY),
        GATE,
        today=TODAY,
        published=published,
        pending=pending,
    )
    wandering = judge(
        Source.BINANCE,
        Observation(BINANCE_PAIR, Decimal(1100), TODAY),
        GATE,
        today=TODAY,
        published=published,
        pending=pending,
    )

    assert (agreeing.verdict, agreeing.confirms_suspect) == (Verdict.ACCEPTED, True)
    assert (wandering.verdict, wandering.confirms_suspect) == (Verdict.SUSPECT, False)


def test_a_pair_without_bounds_is_rejected() -> None:
    verdict = judge(
        Source.BCV,
        Observation("XAU/VES", Decimal(5), TODAY),
        GATE,
        today=TODAY,
        published=None,
        pending=None,
    )

    assert (verdict.verdict, verdict.reason) == (
        Verdict.REJECTED,
        "no bounds configured for XAU/VES",
    )


@given(days=st.integers(min_value=-400, max_value=400))
def test_a_bcv_value_date_far_from_today_is_rejected_but_binance_has_none(days: int) -> None:
    observation = usd("800", TODAY + timedelta(days=days))

    bcv = judge(Source.BCV, observation, GATE, today=TODAY, published=None, pending=None)
    binance = judge(Source.BINANCE, observation, GATE, today=TODAY, published=None, pending=None)

    assert (bcv.verdict is Verdict.REJECTED) is (days > 7 or days < -10)
    assert binance.verdict is Verdict.ACCEPTED


def test_a_bcv_value_older_than_the_published_one_is_rejected() -> None:
    published = Row(1, Decimal(800), effective_date=TODAY)

    verdict = judge(
        Source.BCV,
        usd("801", TODAY - timedelta(days=1)),
        GATE,
        today=TODAY,
        published=published,
        pending=None,
    )

    assert verdict.verdict is Verdict.REJECTED
    assert (
        verdict.reason
        == f"effective date {TODAY - timedelta(days=1)} precedes the published {TODAY}"
    )


def test_a_binance_side_out_of_bounds_rejects_the_mid() -> None:
    observation = Observation(
        BINANCE_PAIR, Decimal(900), TODAY, buy=Decimal(1800), sell=Decimal("0.5")
    )

    verdict = judge(Source.BINANCE, observation, GATE, today=TODAY, published=None, pending=None)

    assert verdict.verdict is Verdict.REJECTED and verdict.reason.startswith("sell ")


# --- repeat_of ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kept", "expected"),
    [
        (None, None),
        (Row(1, Decimal("794.99")), "unchanged"),
        (Row(1, Decimal("794.99"), status="suspect"), "confirmed"),
        (Row(1, Decimal("794.98")), None),
        (Row(1, Decimal("794.99"), effective_date=TODAY - timedelta(days=1)), None),
    ],
)
def test_the_bcv_showing_its_kept_value_again_writes_no_row(
    kept: Row | None, expected: str | None
) -> None:
    assert repeat_of(Source.BCV, usd("794.99"), kept) == expected


@given(value=in_bounds, status=st.sampled_from(["accepted", "confirmed", "suspect"]))
def test_every_binance_reading_is_judged(value: Decimal, status: str) -> None:
    kept = Row(1, value, status=status)

    assert repeat_of(Source.BINANCE, Observation(BINANCE_PAIR, value, TODAY), kept) is None


# --- summarize ---------------------------------------------------------------------------------


@given(st.lists(actions, max_size=6))
def test_the_outcome_is_the_best_thing_that_happened_to_any_pair(seen: list[str]) -> None:
    outcome = summarize(seen)

    if set(seen) <= {"rejected"}:
        assert outcome == "rejected"
    elif {"accepted", "confirmed"} & set(seen):
        assert outcome == "accepted"
    elif "suspect" in seen:
        assert outcome == "suspect"
    else:
        assert outcome == "unchanged"


def test_one_rejected_pair_does_not_reject_the_scrape() -> None:
    assert summarize(["rejected", "accepted", "unchanged"]) == "accepted"
    assert summarize(["rejected", "unchanged"]) == "unchanged"
    assert summarize([]) == "rejected"  # nothing survived the gate: there was nothing


# --- ticks -------------------------------------------------------------------------------------


@given(
    age_s=st.floats(min_value=0, max_value=7200), expiry_s=st.floats(min_value=1, max_value=3600)
)
def test_a_tick_older_than_the_expiry_is_skipped(age_s: float, expiry_s: float) -> None:
    now = datetime(2026, 9, 7, 12, 0, tzinfo=UTC)

    expired = tick_expired(now - timedelta(seconds=age_s), now=now, expiry_s=expiry_s)

    assert expired is (timedelta(seconds=age_s).total_seconds() > expiry_s)


# --- operator acceptance -----------------------------------------------------------------------


def test_a_suspect_nothing_overtook_is_published() -> None:
    suspect = Row(5, Decimal(1000), status="suspect")

    assert check_acceptance(suspect, newest=Row(4, Decimal(800))) is True
    assert check_acceptance(suspect, newest=None) is True


@pytest.mark.parametrize("status", ["accepted", "confirmed"])
def test_a_published_value_is_left_as_it_is(status: str) -> None:
    assert check_acceptance(Row(5, Decimal(800), status=status), newest=None) is False


def test_a_rejected_or_overtaken_value_is_refused() -> None:
    rejected = Row(5, Decimal("0.5"), status="rejected", reason="outside bounds [1, 100000]")
    with pytest.raises(AcceptRefused, match="rejected values are never published") as refused:
        check_acceptance(rejected, newest=None)
    assert not refused.value.retryable

    with pytest.raises(AcceptRefused, match="#5 is outdated: #6 was published after it"):
        check_acceptance(Row(5, Decimal(1000), status="suspect"), newest=Row(6, Decimal(900)))


# --- the Binance book --------------------------------------------------------------------------


def test_a_book_with_an_empty_side_is_refused() -> None:
    buy = [Advert(Decimal("1156.25")), Advert(Decimal("1156.75"))]

    with pytest.raises(EmptyBookError) as refused:
        binance_observation(buy, [], top_n=10, today=TODAY)

    assert (refused.value.outcome, refused.value.retryable) == ("empty", False)


def test_a_full_book_gives_the_mid_valid_today() -> None:
    observation = binance_observation(
        [Advert(Decimal(1150))], [Advert(Decimal(1140))], top_n=10, today=TODAY
    )

    assert observation == Observation(
        BINANCE_PAIR, Decimal(1145), TODAY, buy=Decimal(1150), sell=Decimal(1140)
    )
