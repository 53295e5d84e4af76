"""The checkout's pure rules: an order's amount is exact in every currency, a payment settles it
only when it pays exactly that, and fiscal data is checked as the SAT defines it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from colmena.domain.catalog import check_amount
from colmena.domain.checkout import (
    CheckoutError,
    CheckoutRequest,
    Fiscal,
    draft_order,
    fiscal_fields,
    settlement,
)
from colmena.domain.money import EXPONENTS, price_places, to_minor


@dataclass(frozen=True)
class Product:
    ref: str = "smartcompute"
    kind: str = "license"
    editions: tuple[str, ...] = ("pro",)
    max_seats: int | None = 100_000
    archived_at: datetime | None = None


@dataclass(frozen=True)
class Price:
    id: int
    currency: str
    amount: Decimal


@dataclass(frozen=True)
class StoredOrder:
    id: uuid.UUID
    product_ref: str
    edition: str | None
    seats: int
    quantity: int
    currency: str
    amount: Decimal
    buyer_email: str
    buyer_locale: str | None
    fiscal: dict[str, str] | None
    tenant_ref: str | None
    status: str = "open"
    payment_id: int | None = None


def request(currency: str, seats: int = 1, quantity: int = 1, **change) -> CheckoutRequest:
    fields = dict(
        product="smartcompute",
        edition="pro",
        seats=seats,
        quantity=quantity,
        currency=currency,
        email="comprador@example.com",
        provider="stripe",
    )
    return CheckoutRequest(**(fields | change))


@st.composite
def priced(draw) -> Price:
    currency = draw(st.sampled_from(sorted(EXPONENTS)))
    places = price_places(currency)
    minor = draw(st.integers(min_value=1, max_value=10**9))
    return Price(1, currency, check_amount(Decimal(minor).scaleb(-places), currency))


@given(
    price=priced(),
    seats=st.integers(min_value=1, max_value=1000),
    quantity=st.integers(min_value=1, max_value=100),
)
def test_an_order_settles_only_on_its_exact_amount_and_currency(price, seats, quantity) -> None:
    draft = draft_order(request(price.currency, seats, quantity), Product(), price)
    assert draft.amount == price.amount * seats * quantity
    order = StoredOrder(id=uuid.uuid4(), **{k: getattr(draft, k) for k in _ORDER_FIELDS})
    exact = to_minor(draft.amount, draft.currency)
    assert settlement(order, 1, "approved", exact, draft.currency.lower()).status == "paid"
    for wrong in (exact - 1, exact + 1):
        held = settlement(order, 1, "approved", wrong, draft.currency)
        assert (held.status, held.fulfil) == ("held", False)
    other = "USD" if draft.currency != "USD" else "MXN"
    assert settlement(order, 1, "approved", exact, other).status == "held"


_ORDER_FIELDS = (
    "product_ref",
    "edition",
    "seats",
    "quantity",
    "currency",
    "amount",
    "buyer_email",
    "buyer_locale",
    "fiscal",
    "tenant_ref",
)


def _order(**change) -> StoredOrder:
    draft = draft_order(request("MXN"), Product(), Price(1, "MXN", Decimal("1500.00")))
    order = StoredOrder(id=uuid.uuid4(), **{k: getattr(draft, k) for k in _ORDER_FIELDS})
    return replace(order, **change)


def test_a_held_order_or_another_payment_of_a_paid_one_fulfils_nothing() -> None:
    assert not settlement(_order(status="held"), 1, "refunded", 150_000, "MXN").fulfil
    assert not settlement(_order(status="paid", payment_id=7), 8, "approved", 150_000, "MXN").fulfil
    refund = settlement(_order(status="paid", payment_id=7), 7, "refunded", 150_000, "MXN")
    assert (refund.status, refund.fulfil) == (None, True)
    rejected = settlement(_order(), 1, "rejected", 150_000, "MXN")
    assert (rejected.status, rejected.reason) == ("failed", "payment rejected")


FISCAL = Fiscal(
    rfc="XAXX010101000", name="Público", regime="616", postal_code="06600", cfdi_use="S01"
)


@pytest.mark.parametrize(
    "rfc", ["XAXX010101000", "ABC991231AB1", "GOMJ800229H7A", "ÑAÑ000101AAA", "A&B120131XY9"]
)
def test_rfcs_of_people_and_companies_are_accepted(rfc: str) -> None:
    assert fiscal_fields(replace(FISCAL, rfc=rfc.lower()))["rfc"] == rfc


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rfc": "XAXX011301000"}, "fiscal.rfc"),  # month 13
        ({"rfc": "XAXX010132000"}, "fiscal.rfc"),  # day 32
        ({"rfc": "XAXX0101010001"}, "fiscal.rfc"),  # too long
        ({"rfc": "XA1X010101000"}, "fiscal.rfc"),
        ({"regime": "600"}, "fiscal.regime"),
        ({"postal_code": "0660"}, "fiscal.postal_code"),
        ({"cfdi_use": "P01"}, "fiscal.cfdi_use"),  # retired in CFDI 4.0
        ({"name": "  "}, "fiscal"),
    ],
)
def test_fiscal_data_the_sat_would_refuse_is_refused(change, field) -> None:
    with pytest.raises(CheckoutError) as refused:
        fiscal_fields(replace(FISCAL, **change))
    assert (refused.value.status, refused.value.code, refused.value.field) == (
        422,
        "invalid_fiscal_data",
        field,
    )


def test_an_archived_product_is_unknown() -> None:
    with pytest.raises(CheckoutError) as refused:
        draft_order(request("MXN"), Product(archived_at=datetime.now(UTC)), None)
    assert (refused.value.status, refused.value.code) == (404, "unknown_product")
