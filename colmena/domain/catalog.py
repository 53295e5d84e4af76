"""What may be sold, and at what price: the catalog's rules, and amounts as providers take them.

A product is a license product (a package directory, editions, a seat limit) or a tenant plan
(the plans row it grants). A price is a Decimal in one currency, for one edition or any; a plan's
price has a billing period. Amounts are checked here once, when an operator writes them, so a
checkout never has to round: a price has no more decimals than its currency allows
(`colmena.domain.money.price_places`: none for CLP, and none for COP, which Mercado Pago takes
in whole pesos only), and becomes provider units exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Protocol

from colmena.domain.money import EXPONENTS, is_known, price_places, to_minor

KINDS = ("license", "plan")
BILLING_PERIODS = ("month", "year")
MAX_SEATS = 100_000  # the products table's bound
MAX_EDITIONS = 20
MAX_NAME = 200
# numeric(18,4) holds 14 integer digits; a price of 10^12 or more is a typo, not a price.
MAX_AMOUNT = Decimal(10) ** 12

REF = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
PACKAGE_DIR = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
EDITION = REF
PLAN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class CatalogError(ValueError):
    """Input the catalog refuses; `field` names what was wrong, for CLI and HTTP answers."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class NewProduct:
    ref: str
    kind: str
    name: str
    package_dir: str | None = None
    editions: tuple[str, ...] = ()
    max_seats: int | None = None
    plan: str | None = None


@dataclass(frozen=True)
class NewPrice:
    product_ref: str
    edition: str | None
    currency: str
    amount: Decimal
    billing_period: str | None


class Priced(Protocol):
    """What pricing needs to know of a product: a new one, or one the store read."""

    @property
    def ref(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def editions(self) -> tuple[str, ...]: ...


def check_ref(ref: str, field: str = "ref") -> str:
    if not REF.fullmatch(ref):
        raise CatalogError(
            field,
            f"{field} {ref!r}: lowercase letters, digits, '.', '_' and '-', starting with a "
            "letter or digit, up to 63",
        )
    return ref


def _name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise CatalogError("name", f"name: 1 to {MAX_NAME} characters")
    return name


def license_product(
    ref: str, name: str, package_dir: str, editions: list[str], max_seats: int
) -> NewProduct:
    """A license product: its files live in COLMENA_LICENSE_PRODUCTS_DIR/<package_dir>/."""
    if not PACKAGE_DIR.fullmatch(package_dir):
        raise CatalogError(
            "package_dir",
            f"package_dir {package_dir!r}: one directory name (letters, digits, '.', '_', '-')",
        )
    if not editions:
        raise CatalogError("editions", "a license product needs at least one edition")
    if len(editions) > MAX_EDITIONS:
        raise CatalogError("editions", f"at most {MAX_EDITIONS} editions")
    for edition in editions:
        check_ref(edition, "edition")
    if len(set(editions)) != len(editions):
        raise CatalogError("editions", "an edition is listed twice")
    if not 1 <= max_seats <= MAX_SEATS:
        raise CatalogError("max_seats", f"max_seats: 1 to {MAX_SEATS:,}")
    return NewProduct(
        ref=check_ref(ref),
        kind="license",
        name=_name(name),
        package_dir=package_dir,
        editions=tuple(editions),
        max_seats=max_seats,
    )


def plan_product(ref: str, name: str, plan: str) -> NewProduct:
    """A tenant plan: buying it sets the tenant's plan (the plans row named `plan`)."""
    if not PLAN.fullmatch(plan):
        raise CatalogError("plan", f"plan {plan!r} is not a plan name")
    return NewProduct(ref=check_ref(ref), kind="plan", name=_name(name), plan=plan)


def check_currency(currency: str) -> str:
    """The upper-case ISO 4217 code, if colmena's money table lists it."""
    code = currency.strip().upper()
    if not is_known(code):
        raise CatalogError(
            "currency", f"currency {currency!r} is not one colmena knows ({', '.join(EXPONENTS)})"
        )
    return code


def check_amount(amount: str | Decimal, currency: str) -> Decimal:
    """A positive Decimal with no more decimals than the currency allows, at that scale.

    "1500.00" CLP is 1500 (the zeros say nothing); "1500.5" CLP, "0" and "-3" are refused.
    """
    try:
        value = Decimal(amount.strip() if isinstance(amount, str) else amount)
    except InvalidOperation:
        raise CatalogError("amount", f"amount {amount!r} is not a number") from None
    if not value.is_finite() or value <= 0:
        raise CatalogError("amount", "amount must be a positive number")
    if value >= MAX_AMOUNT:
        raise CatalogError("amount", f"amount must be below {MAX_AMOUNT:,}")
    places = price_places(currency)
    quantum = Decimal(1).scaleb(-places)
    if value != value.quantize(quantum):
        allowed = f"at most {places} decimals" if places else "no decimals"
        raise CatalogError("amount", f"a {currency} amount has {allowed}: {amount}")
    return value.quantize(quantum)


def new_price(
    product: Priced,
    *,
    currency: str,
    amount: str | Decimal,
    edition: str | None = None,
    billing_period: str | None = None,
) -> NewPrice:
    """A price for `product`: an edition it has (or none: any edition), a plan's period."""
    code = check_currency(currency)
    value = check_amount(amount, code)
    if product.kind == "plan":
        if edition is not None:
            raise CatalogError("edition", "a plan has no editions")
        if billing_period not in BILLING_PERIODS:
            raise CatalogError(
                "billing_period",
                f"a plan's price needs a billing period: {', '.join(BILLING_PERIODS)}",
            )
    else:
        if billing_period is not None:
            raise CatalogError("billing_period", "a license price has no billing period")
        if edition is not None and edition not in product.editions:
            editions = ", ".join(product.editions)
            raise CatalogError(
                "edition", f"{product.ref} has no edition {edition!r} (editions: {editions})"
            )
    return NewPrice(product.ref, edition, code, value, billing_period)


def stripe_amount(amount: Decimal, currency: str) -> int:
    """Stripe's `unit_amount`: minor units with the ISO exponent, which is Stripe's for every
    currency the money table lists (its zero-decimal ones are on Stripe's zero-decimal list;
    COP stays in cents at Stripe, so 150000 COP is 15000000)."""
    return to_minor(amount, currency)


def decimal_amount(amount: Decimal, currency: str) -> Decimal:
    """The amount as providers that take decimals want it (Mercado Pago's `unit_price`): the
    price's own places, so COP and CLP are whole numbers and MXN has two decimals. An amount
    finer than that is a ValueError: the catalog never stores one, and nothing is rounded."""
    exact = amount.quantize(Decimal(1).scaleb(-price_places(currency)))
    if exact != amount:
        raise ValueError(f"{amount} {currency} has more decimals than its prices may have")
    return exact
