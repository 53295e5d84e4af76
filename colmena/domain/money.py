"""Money shown one way everywhere: ``1,500.00 MXN``, from the integer minor units colmena stores.

Payments are stored as integer minor units (Stripe's amounts as sent; Mercado Pago's decimal
amounts scaled by `colmena.domain.payment_events.to_minor_units`). Turning them back into an
amount needs the currency's ISO 4217 exponent: two decimals for most, none for the Chilean peso
or the yen. The table lists the currencies colmena meets (Stripe's and Mercado Pago's Latin
American currencies, the dollar and euro, the bolívar of the rates); any other currency is read
with two decimals, which is what the payments actors assume when they store one. The catalog
refuses a currency the table does not list.

The Colombian peso keeps its ISO exponent of 2 (Stripe's API counts COP in cents: it is not on
Stripe's zero-decimal list), but Mercado Pago takes only whole pesos ("Prices in COP currency
must be expressed with integer values"), so a COP price is whole pesos: `price_places`.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

DEFAULT_EXPONENT = 2
# ISO 4217 minor units of the currencies colmena meets. The zero-decimal ones are those the
# payments actors store without decimals (`payment_events.to_minor_units` reads this table).
EXPONENTS: dict[str, int] = {
    "MXN": 2,
    "USD": 2,
    "EUR": 2,
    "ARS": 2,
    "BRL": 2,
    "COP": 2,
    "PEN": 2,
    "UYU": 2,
    "VES": 2,
    "CLP": 0,
    "PYG": 0,
    "JPY": 0,
    "KRW": 0,
    "VND": 0,
    "UGX": 0,
    "XAF": 0,
    "XOF": 0,
}
# Two-decimal in ISO 4217 and at Stripe, but whole units only at Mercado Pago: a price in one of
# these has no decimals, so every provider can charge it exactly.
WHOLE_UNIT_CURRENCIES = frozenset({"COP"})


def exponent(currency: str) -> int:
    """How many decimals the currency's minor unit has (ISO 4217)."""
    return EXPONENTS.get(currency.upper(), DEFAULT_EXPONENT)


def is_known(currency: str) -> bool:
    """Whether the table lists the currency (its exponent is known, not assumed)."""
    return currency.upper() in EXPONENTS


def price_places(currency: str) -> int:
    """How many decimals a price may have: the exponent, or none for a whole-unit currency."""
    return 0 if currency.upper() in WHOLE_UNIT_CURRENCIES else exponent(currency)


def to_minor(amount: Decimal, currency: str) -> int:
    """The minor units ``amount`` makes, exactly: Decimal("1500.00") MXN -> 150000.

    An amount finer than the minor unit is a ValueError, never rounded: a price is charged as
    written or not at all.
    """
    if not amount.is_finite():
        raise ValueError(f"{amount} is not a finite amount")
    scaled = amount.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} {currency.upper()} is finer than the currency's minor unit")
    return int(scaled)


def from_minor(minor: int, currency: str) -> Decimal:
    """The amount ``minor`` minor units make, exactly: 150000 MXN -> Decimal("1500.00")."""
    places = exponent(currency)
    return Decimal(minor).scaleb(-places).quantize(Decimal(1).scaleb(-places))


def format_money(amount: Decimal, currency: str) -> str:
    """``1,500.00 MXN``: thousands separated by commas, the currency's decimals, its code.

    An amount finer than the currency's minor unit is rounded half up (a rate-derived price, say).
    """
    places = exponent(currency)
    rounded = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return f"{rounded:,.{places}f} {currency.upper()}"


def format_minor(minor: int, currency: str) -> str:
    """``format_money`` of a stored amount in minor units."""
    return format_money(from_minor(minor, currency), currency)
