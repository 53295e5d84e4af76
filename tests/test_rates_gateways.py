"""BCV and Binance P2P gateways against recorded-shape fixtures and local
stand-ins, plus the representative-rate and sanity maths they feed."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TypedDict

import pytest
from cryptography import x509
from selectolax.lexbor import LexborHTMLParser

from colmena.domain.rates import (
    Verdict,
    check_effective_date,
    check_rate,
    iqr_fence,
    market_rate,
    median,
    representative_price,
)
from colmena.gateways.bcv import (
    DEFAULT_CA_BUNDLE,
    BcvHttpError,
    BcvTimeoutError,
    BcvTlsError,
    MissingDateError,
    MissingRateError,
    UnparsableNumberError,
    build_ssl_context,
    parse_bcv_page,
    parse_ves_number,
    scrape_bcv,
)
from colmena.gateways.binance import (
    BinanceApiCodeError,
    BinanceForbiddenError,
    BinanceHttpError,
    BinanceResponseError,
    BinanceTimeoutError,
    Side,
    fetch_p2p_book,
    parse_search_response,
    search_body,
)
from tests.standins.rates import (
    FIXTURES,
    StandIn,
    StandInPki,
    bcv_standin,
    binance_standin,
    make_test_pki,
)


class Retries(TypedDict):
    attempts: int
    backoff: float


FAST: Retries = {"attempts": 3, "backoff": 0.01}  # real retries, without real waiting


def bcv_fixture(name: str) -> str:
    return (FIXTURES / "bcv" / name).read_text(encoding="utf-8")


def binance_fixture(name: str) -> object:
    return json.loads((FIXTURES / "binance" / name).read_text(encoding="utf-8"))


# --- BCV: parsing each recorded page -------------------------------------------------------------


def test_normal_page_gives_every_rate_with_all_eight_decimals() -> None:
    page = parse_bcv_page(bcv_fixture("normal.html"))

    assert page.effective_date == date(2026, 8, 31)
    assert {pair: str(value) for pair, value in page.rates.items()} == {
        "USD/VES": "794.99170000",
        "EUR/VES": "925.66370000",
        "CNY/VES": "111.47210000",
        "TRY/VES": "16.47982495",
        "RUB/VES": "9.22739438",
    }


def test_decoy_date_spans_elsewhere_are_ignored() -> None:
    html = bcv_fixture("decoy_date.html")
    tree = LexborHTMLParser(html)
    # The fixture really does put other dates first, page-wide and inside the block.
    page_dates = [span.attributes["content"] for span in tree.css("span.date-display-single")]
    block_dates = [
        span.attributes["content"]
        for span in tree.css(".view-tipo-de-cambio-oficial-del-bcv span.date-display-single")
    ]
    assert page_dates[0] == "2026-08-28T00:00:00-04:00"
    assert block_dates[0] == "2026-08-14T00:00:00-04:00"

    page = parse_bcv_page(html)

    assert page.effective_date == date(2026, 9, 1)
    assert page.rates["USD/VES"] == Decimal("796.41250000")


def test_thousands_dots_are_grouping_not_decimals() -> None:
    page = parse_bcv_page(bcv_fixture("thousands_dot.html"))

    assert str(page.rates["USD/VES"]) == "1012.45610000"
    assert str(page.rates["EUR/VES"]) == "1187.93210000"


def test_page_without_dolar_is_refused() -> None:
    with pytest.raises(MissingRateError):
        parse_bcv_page(bcv_fixture("missing_dolar.html"))


def test_future_value_date_becomes_the_effective_date() -> None:
    page = parse_bcv_page(bcv_fixture("future_date.html"))

    assert page.effective_date == date(2026, 9, 7)
    published_on_friday = date(2026, 9, 4)
    assert (
        check_effective_date(page.effective_date, published_on_friday).verdict is Verdict.ACCEPTED
    )
    assert check_effective_date(date(2027, 9, 7), published_on_friday).verdict is Verdict.REJECTED
    assert check_effective_date(date(2026, 7, 1), published_on_friday).verdict is Verdict.REJECTED


def test_missing_value_date_in_the_rate_row_is_refused_despite_decoys() -> None:
    html = bcv_fixture("decoy_date.html")
    row_date = (
        'Fecha Valor: <span class="date-display-single" property="dc:date" datatype="xsd:dateTime" '
        'content="2026-09-01T00:00:00-04:00">Martes, 01 Septiembre  2026</span>'
    )
    assert html.count(row_date) == 1

    with pytest.raises(MissingDateError):
        parse_bcv_page(html.replace(row_date, "Fecha Valor:"))


def test_unreadable_value_date_is_refused() -> None:
    html = bcv_fixture("normal.html").replace(
        'content="2026-08-31T00:00:00-04:00"', 'content="31/08/2026"'
    )

    with pytest.raises(MissingDateError):
        parse_bcv_page(html)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("794,99170000", "794,99l70000"),  # letter l instead of digit 1
        ("794,99170000", "794.99170000"),  # dot decimal: ambiguous, never guessed
        ("794,99170000", "0,00000000"),
        ("794,99170000", ""),
        ("925,66370000", "N/D"),  # another currency broken: the whole page is suspect
    ],
)
def test_unparsable_numbers_are_refused(old: str, new: str) -> None:
    html = bcv_fixture("normal.html")
    assert html.count(old) == 1

    with pytest.raises(UnparsableNumberError):
        parse_bcv_page(html.replace(old, new))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("794,99170000", "794.99170000"),
        (" 9,22739438", "9.22739438"),
        ("1.012,45610000", "1012.45610000"),
        ("1 012,45610000", "1012.45610000"),
        ("\n  12.345.678,00000001 ", "12345678.00000001"),
    ],
)
def test_ves_numbers_keep_every_decimal(text: str, expected: str) -> None:
    assert str(parse_ves_number(text)) == expected


@pytest.mark.parametrize(
    "text", ["", "abc", "1,2,3", "1.01,5", "1.0123,5", "-5,0", "1e3,0", "NaN", "Infinity", ",5"]
)
def test_ves_number_garbage_is_refused(text: str) -> None:
    with pytest.raises(UnparsableNumberError):
        parse_ves_number(text)


# --- BCV: fetching over HTTPS with a CA bundle ---------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> StandInPki:
    return make_test_pki(tmp_path)


@pytest.fixture
async def bcv_https(pki: StandInPki) -> AsyncIterator[StandIn]:
    async with bcv_standin(pki.server_context) as server:
        yield server


async def test_https_fetch_verifies_with_the_bundle_that_completes_the_chain(
    bcv_https: StandIn, pki: StandInPki
) -> None:
    page = await scrape_bcv(bcv_https.url + "/", ca_bundle=pki.bundle, timeout=5, **FAST)

    assert page.rates["USD/VES"] == Decimal("794.99170000")
    assert page.effective_date == date(2026, 8, 31)
    assert len(bcv_https.requests) == 1
    assert bcv_https.requests[0].user_agent.startswith("Mozilla/5.0")


@pytest.mark.parametrize("bundle", ["root_only", "wrong_ca", "shipped"])
async def test_https_fetch_refuses_a_chain_the_bundle_cannot_complete(
    bcv_https: StandIn, pki: StandInPki, bundle: str
) -> None:
    ca_bundle = DEFAULT_CA_BUNDLE if bundle == "shipped" else getattr(pki, bundle)

    with pytest.raises(BcvTlsError):
        await scrape_bcv(bcv_https.url + "/", ca_bundle=ca_bundle, timeout=5, **FAST)
    assert bcv_https.requests == []  # not one byte of HTTP went over an unverified connection


def test_ssl_context_always_verifies(pki: StandInPki) -> None:
    context = build_ssl_context(pki.bundle)

    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert {c["subject"][-1][0][1] for c in context.get_ca_certs()} == {
        "Test Root",
        "Test Intermediate",
    }


def test_shipped_bundle_holds_the_sectigo_intermediate_bcv_omits() -> None:
    certificates = {
        c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value: c
        for c in x509.load_pem_x509_certificates(DEFAULT_CA_BUNDLE.read_bytes())
    }
    intermediate = certificates["Sectigo Public Server Authentication CA DV R36"]
    root = certificates["Sectigo Public Server Authentication Root R46"]

    assert set(certificates) == {
        "Sectigo Public Server Authentication CA DV R36",
        "Sectigo Public Server Authentication Root R46",
        "USERTrust RSA Certification Authority",
    }
    intermediate.verify_directly_issued_by(root)  # raises if the signature does not check out
    root.verify_directly_issued_by(root)
    assert intermediate.not_valid_after_utc.year == 2036


async def test_bcv_5xx_is_retried_three_times_then_refused(
    bcv_https: StandIn, pki: StandInPki
) -> None:
    bcv_https.mode = "5xx"

    with pytest.raises(BcvHttpError) as refused:
        await scrape_bcv(bcv_https.url + "/", ca_bundle=pki.bundle, timeout=5, **FAST)
    assert refused.value.status == 503
    assert len(bcv_https.requests) == 3


async def test_bcv_transient_5xx_recovers_on_a_later_attempt(
    bcv_https: StandIn, pki: StandInPki
) -> None:
    bcv_https.mode, bcv_https.fail_times = "5xx", 2

    page = await scrape_bcv(bcv_https.url + "/", ca_bundle=pki.bundle, timeout=5, **FAST)

    assert page.rates["USD/VES"] == Decimal("794.99170000")
    assert len(bcv_https.requests) == 3


async def test_bcv_timeout_is_retried_then_refused(bcv_https: StandIn, pki: StandInPki) -> None:
    bcv_https.mode = "timeout"

    with pytest.raises(BcvTimeoutError):
        await scrape_bcv(bcv_https.url + "/", ca_bundle=pki.bundle, timeout=0.3, **FAST)
    assert len(bcv_https.requests) == 3


async def test_bcv_4xx_is_not_retried(bcv_https: StandIn, pki: StandInPki) -> None:
    bcv_https.mode = "403"

    with pytest.raises(BcvHttpError) as refused:
        await scrape_bcv(bcv_https.url + "/", ca_bundle=pki.bundle, timeout=5, **FAST)
    assert refused.value.status == 403
    assert len(bcv_https.requests) == 1


@pytest.mark.parametrize(
    ("fixture", "error"), [("missing_dolar.html", MissingRateError), ("decoy_date.html", None)]
)
async def test_bcv_scrape_parses_what_it_fetched(
    bcv_https: StandIn, pki: StandInPki, fixture: str, error: type[Exception] | None
) -> None:
    bcv_https.bcv_page = fixture
    if error is None:
        page = await scrape_bcv(bcv_https.url + "/", ca_bundle=pki.bundle, timeout=5, **FAST)
        assert page.effective_date == date(2026, 9, 1)
    else:
        with pytest.raises(error):
            await scrape_bcv(bcv_https.url + "/", ca_bundle=pki.bundle, timeout=5, **FAST)


# --- Binance P2P ---------------------------------------------------------------------------------


@pytest.fixture
async def binance() -> AsyncIterator[StandIn]:
    async with binance_standin() as server:
        yield server


async def test_binance_normal_book_gives_buy_sell_and_mid(binance: StandIn) -> None:
    book = await fetch_p2p_book(binance.url, pay_types=["PagoMovil"], timeout=5, **FAST)

    assert [r.body for r in binance.requests] == [
        {"asset": "USDT", "fiat": "VES", "tradeType": trade_type, "page": 1, "rows": 20,
         "payTypes": ["PagoMovil"], "publisherType": None}
        for trade_type in ("BUY", "SELL")
    ]  # fmt: skip
    assert binance.requests[0].user_agent.startswith("Mozilla/5.0")
    rate = market_rate(book[Side.BUY], book[Side.SELL])
    assert rate is not None
    assert (rate.buy, rate.sell, rate.mid) == (
        Decimal("1156.25"),
        Decimal("1140.70"),
        Decimal("1148.475"),
    )
    assert rate.buy > rate.sell  # asks above bids: the sides were not swapped


async def test_binance_maker_side_maps_to_the_user_side(binance: StandIn) -> None:
    book = await fetch_p2p_book(binance.url, timeout=5, **FAST)

    buy = {ad.price: ad for ad in book[Side.BUY]}
    assert Side.BUY.maker_trade_type == "SELL" and Side.SELL.maker_trade_type == "BUY"
    assert all(ad.maker_trade_type == "BUY" and ad.eligible for ad in book[Side.SELL])
    assert (
        buy[Decimal("1158.40")].maker_trade_type == "BUY" and not buy[Decimal("1158.40")].eligible
    )
    assert buy[Decimal("1154.00")].promoted
    assert not buy[Decimal("1154.20")].eligible  # isTradable: false
    assert sum(ad.eligible and not ad.promoted for ad in book[Side.BUY]) == 10


async def test_binance_top_n_by_volume_ignores_promoted_and_ineligible_ads(
    binance: StandIn,
) -> None:
    book = await fetch_p2p_book(binance.url, timeout=5, **FAST)

    # The three excluded ads carry the largest volumes; were any counted, the top 5 would change.
    rate = market_rate(book[Side.BUY], book[Side.SELL], top_n=5)
    assert rate is not None
    assert rate.buy == Decimal("1155.50")


async def test_binance_extreme_outlier_is_fenced_out(binance: StandIn) -> None:
    binance.binance_book["BUY"] = "outlier_buy.json"

    book = await fetch_p2p_book(binance.url, timeout=5, **FAST)

    prices = [ad.price for ad in book[Side.BUY] if ad.eligible and not ad.promoted]
    low, high = iqr_fence(prices)
    assert Decimal("115600.00") in prices and not low <= Decimal("115600.00") <= high
    assert representative_price(book[Side.BUY], top_n=5) == Decimal("1155.50")
    # Without the fence the fat-fingered ad, the largest by volume, would move the rate.
    assert representative_price(book[Side.BUY], top_n=5, fence_k=Decimal(10**9)) != Decimal(
        "1155.50"
    )


async def test_binance_empty_book_writes_nothing(binance: StandIn) -> None:
    binance.binance_book = {"BUY": "empty.json", "SELL": "empty.json"}

    book = await fetch_p2p_book(binance.url, timeout=5, **FAST)

    assert book == {Side.BUY: [], Side.SELL: []}
    assert market_rate(book[Side.BUY], book[Side.SELL]) is None


async def test_binance_one_empty_side_writes_nothing(binance: StandIn) -> None:
    binance.binance_book["SELL"] = "empty.json"

    book = await fetch_p2p_book(binance.url, timeout=5, **FAST)

    assert book[Side.BUY] and not book[Side.SELL]
    assert market_rate(book[Side.BUY], book[Side.SELL]) is None


async def test_binance_non_success_code_is_refused(binance: StandIn) -> None:
    binance.binance_book = {"BUY": "error_code.json", "SELL": "error_code.json"}

    with pytest.raises(BinanceApiCodeError) as refused:
        await fetch_p2p_book(binance.url, timeout=5, **FAST)
    assert refused.value.code == "000002"
    assert len(binance.requests) == 1


async def test_binance_403_is_not_retried(binance: StandIn) -> None:
    binance.mode = "403"

    with pytest.raises(BinanceForbiddenError):
        await fetch_p2p_book(binance.url, timeout=5, **FAST)
    assert len(binance.requests) == 1


async def test_binance_5xx_is_retried_three_times_then_refused(binance: StandIn) -> None:
    binance.mode = "5xx"

    with pytest.raises(BinanceHttpError) as refused:
        await fetch_p2p_book(binance.url, timeout=5, **FAST)
    assert refused.value.status == 503
    assert len(binance.requests) == 3


async def test_binance_timeout_is_retried_then_refused(binance: StandIn) -> None:
    binance.mode = "timeout"

    with pytest.raises(BinanceTimeoutError):
        await fetch_p2p_book(binance.url, timeout=0.3, **FAST)
    assert len(binance.requests) == 3


def test_binance_envelope_garbage_is_refused() -> None:
    with pytest.raises(BinanceResponseError):
        parse_search_response(["not", "an", "object"], Side.BUY)
    with pytest.raises(BinanceResponseError):
        parse_search_response({"code": "000000", "data": None}, Side.BUY)
    with pytest.raises(BinanceApiCodeError):
        parse_search_response(binance_fixture("error_code.json"), Side.BUY)


def test_binance_rows_without_a_readable_price_are_skipped() -> None:
    payload = binance_fixture("normal_sell.json")
    assert isinstance(payload, dict)
    payload["data"][0]["adv"]["price"] = "1.141,00"
    payload["data"][1]["adv"]["price"] = None
    payload["data"][2]["adv"]["price"] = 1142.1  # a float is never trusted as money

    adverts = parse_search_response(payload, Side.SELL)

    assert len(adverts) == len(payload["data"]) - 3
    assert all(isinstance(ad.price, Decimal) for ad in adverts)


def test_search_body_caps_rows_at_twenty() -> None:
    assert search_body(Side.SELL, rows=20)["tradeType"] == "SELL"
    with pytest.raises(ValueError):
        search_body(Side.BUY, rows=21)
    with pytest.raises(ValueError):
        search_body(Side.BUY, page=0)


# --- representative rate and sanity ---------------------------------------------------------------


@dataclass(frozen=True)
class Q:
    price: Decimal
    volume: Decimal = Decimal(1)
    promoted: bool = False
    eligible: bool = True


def test_median_is_exact() -> None:
    assert median([Decimal("3"), Decimal("1"), Decimal("2")]) == Decimal("2")
    assert median([Decimal("1.1"), Decimal("1.2")]) == Decimal("1.15")
    with pytest.raises(ValueError):
        median([])


def test_nothing_usable_gives_no_rate() -> None:
    assert representative_price([]) is None
    assert (
        representative_price([Q(Decimal("10"), promoted=True), Q(Decimal("11"), eligible=False)])
        is None
    )
    assert representative_price([Q(Decimal("10"), volume=Decimal(0))]) is None
    assert representative_price([Q(Decimal("NaN")), Q(Decimal("-1"))]) is None


def test_single_usable_quote_is_its_own_median() -> None:
    assert representative_price([Q(Decimal("1150.5"))]) == Decimal("1150.5")


def test_fence_uses_two_and_a_half_iqr() -> None:
    prices = [Decimal(p) for p in ("100", "101", "102", "103", "104")]
    low, high = iqr_fence(prices)
    assert (low, high) == (Decimal("96.0"), Decimal("108.0"))  # Q1 101, Q3 103, IQR 2


def test_top_n_must_be_positive() -> None:
    with pytest.raises(ValueError):
        representative_price([Q(Decimal("1"))], top_n=0)


BOUNDS = {"lower": Decimal("1"), "upper": Decimal("100000")}


@pytest.mark.parametrize(
    "value",
    [
        Decimal("NaN"),
        Decimal("Infinity"),
        Decimal("-Infinity"),
        Decimal("0"),
        Decimal("-794.99"),
        Decimal("0.5"),
        Decimal("100000.01"),
        794.99,
        "794.99",
    ],
)  # fmt: skip
def test_garbage_values_are_rejected(value: object) -> None:
    result = check_rate(value, last_accepted=Decimal("794.99"), **BOUNDS)  # type: ignore[arg-type]

    assert result.verdict is Verdict.REJECTED


def test_first_value_and_small_moves_are_accepted() -> None:
    assert check_rate(Decimal("794.99"), last_accepted=None, **BOUNDS).verdict is Verdict.ACCEPTED
    assert (
        check_rate(Decimal("810.00"), last_accepted=Decimal("794.99"), **BOUNDS).verdict
        is Verdict.ACCEPTED
    )
    exactly_twenty = check_rate(Decimal("120"), last_accepted=Decimal("100"), **BOUNDS)
    assert exactly_twenty.verdict is Verdict.ACCEPTED


def test_big_move_is_suspect_until_the_next_scrape_confirms_it() -> None:
    first = check_rate(Decimal("1000.00"), last_accepted=Decimal("794.99"), **BOUNDS)
    assert first.verdict is Verdict.SUSPECT

    confirmed = check_rate(
        Decimal("1003.00"),
        last_accepted=Decimal("794.99"),
        pending_suspect=Decimal("1000.00"),
        **BOUNDS,
    )
    assert confirmed.verdict is Verdict.ACCEPTED and confirmed.confirms_suspect

    wild_again = check_rate(
        Decimal("1500.00"),
        last_accepted=Decimal("794.99"),
        pending_suspect=Decimal("1000.00"),
        **BOUNDS,
    )
    assert wild_again.verdict is Verdict.SUSPECT and not wild_again.confirms_suspect

    back_to_normal = check_rate(
        Decimal("796.00"),
        last_accepted=Decimal("794.99"),
        pending_suspect=Decimal("1000.00"),
        **BOUNDS,
    )
    assert back_to_normal.verdict is Verdict.ACCEPTED and not back_to_normal.confirms_suspect


def test_max_change_is_configurable() -> None:
    result = check_rate(
        Decimal("850"), last_accepted=Decimal("794.99"), max_change_pct=Decimal("5"), **BOUNDS
    )

    assert result.verdict is Verdict.SUSPECT
