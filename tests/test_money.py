"""Money shown one way: minor units -> Decimal -> "1,500.00 MXN", and back without loss."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from colmena.domain.money import EXPONENTS, exponent, format_minor, format_money, from_minor
from colmena.domain.payment_events import to_minor_units

CURRENCIES = sorted(EXPONENTS) + ["XYZ"]


def parse(text: str) -> tuple[Decimal, str]:
    number, currency = text.split(" ")
    return Decimal(number.replace(",", "")), currency


@given(
    minor=st.integers(min_value=-(10**15), max_value=10**15), currency=st.sampled_from(CURRENCIES)
)
def test_minor_to_text_and_back_is_exact(minor: int, currency: str) -> None:
    amount = from_minor(minor, currency)
    text = format_money(amount, currency)
    parsed, code = parse(text)
    assert code == currency
    assert parsed == amount
    assert int(parsed.scaleb(exponent(currency))) == minor
    assert format_minor(minor, currency.lower()) == text


@given(minor=st.integers(min_value=0, max_value=10**12), currency=st.sampled_from(CURRENCIES))
def test_what_the_payments_actors_store_reads_back_as_the_same_amount(
    minor: int, currency: str
) -> None:
    """Mercado Pago's decimal amounts are stored by payment_events; shown here, they must agree."""
    assert to_minor_units(str(from_minor(minor, currency)), currency) == minor


def test_the_formats_a_user_sees() -> None:
    assert format_minor(150_000, "MXN") == "1,500.00 MXN"
    assert format_minor(150_000, "mxn") == "1,500.00 MXN"
    assert format_minor(5, "USD") == "0.05 USD"
    assert format_minor(1_234_567, "CLP") == "1,234,567 CLP"
    assert format_minor(-99_900, "EUR") == "-999.00 EUR"
    assert format_money(Decimal("1234.5"), "MXN") == "1,234.50 MXN"
    assert format_money(Decimal("0.125"), "USD") == "0.13 USD"
    assert from_minor(150_000, "MXN") == Decimal("1500.00")
    assert str(from_minor(150_000, "MXN")) == "1500.00"


def test_providers_decimal_amounts_use_the_currencys_exponent() -> None:
    assert to_minor_units(1500.5, "MXN") == 150050
    assert to_minor_units("350000", "CLP") == 350000
    assert to_minor_units(0.1 + 0.2, "USD") == 30  # a float's noise is rounded away
    assert exponent("XYZ") == 2
