"""A checkout's rules: what a buyer may order from a provider, and how its payment settles it.

Plain data in, decisions out. The request's shapes (an email, a quantity in range) are the HTTP
model's; here live the rules that need the catalog and the providers' terms:

- the edition must be one the product has, and seats x quantity within its seat limit;
- the currency must be one the provider charges in, and installments only where the provider
  offers them: Mercado Pago (1 to MERCADOPAGO_MAX_INSTALLMENTS, the maximum the buyer is
  offered), Stripe only in MXN with Mexico's installment plans (meses sin intereses: Stripe
  offers them on Mexican cards in MXN only, in 3, 6, 9, 12, 18 or 24 months), Bitso never;
- fiscal data for a CFDI is checked as the invoicing rules will read it (RFC, regime, postal
  code, CFDI use), in MXN only, the one currency colmena invoices.

The amount is price x seats x quantity (a license price is per seat; the quantity buys that
many times the seats, delivered as one license). What comes back from a provider is matched
against the order, never the other way round: the order's amount and currency must be paid
exactly, and the follow-ups read the order's product, edition, seats, email and fiscal data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from colmena.domain import invoicing
from colmena.domain.accounts import PolicyError, normalize_email
from colmena.domain.money import format_minor, format_money, to_minor
from colmena.domain.payment_state import Status

PROVIDERS = ("stripe", "mercadopago", "bitso")
MAX_QUANTITY = 100  # the orders table's bound
STRIPE_INSTALLMENT_CURRENCIES = frozenset({"MXN"})
STRIPE_INSTALLMENT_COUNTS = frozenset({3, 6, 9, 12, 18, 24})
MERCADOPAGO_MAX_INSTALLMENTS = 36
# The currencies of the Mercado Pago sites a Checkout Pro preference is made on (a seller
# charges in its site's currency; Colombia's COP is where PSE bank transfers are offered).
MERCADOPAGO_CURRENCIES = frozenset({"MXN", "ARS", "BRL", "CLP", "COP", "PEN", "UYU"})
# Pay with Bitso charges in Mexican pesos (the asset its payment intents document).
BITSO_ASSETS = frozenset({"MXN"})
# The SAT's RFC (CFDI 4.0's t_RFC): 3 letters (a company) or 4 (a person), a valid yymmdd date,
# a two-character homoclave and a check digit (or A).
RFC = re.compile(r"[A-ZÑ&]{3,4}\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])[A-Z\d]{2}[\dA]")
# SAT catalogs c_RegimenFiscal and c_UsoCFDI (CFDI 4.0) as a receiver may state them.
FISCAL_REGIMES = frozenset(
    "601 603 605 606 607 608 610 611 612 614 615 616 620 621 622 623 624 625 626".split()
)
CFDI_USES = frozenset(
    "G01 G02 G03 I01 I02 I03 I04 I05 I06 I07 I08 D01 D02 D03 D04 D05 D06 D07 D08 D09 D10 "
    "S01 CP01 CN01".split()
)
POSTAL_CODE = re.compile(r"\d{5}")


class CheckoutError(ValueError):
    """A checkout refused before anything is stored: `status`, `code` and `field` for the
    answer."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field


class Sellable(Protocol):
    """A catalog product as the checkout reads it (store.catalog.Product)."""

    @property
    def ref(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def editions(self) -> tuple[str, ...]: ...
    @property
    def max_seats(self) -> int | None: ...
    @property
    def archived_at(self) -> Any: ...


class Priced(Protocol):
    """A live catalog price (store.catalog.Price)."""

    @property
    def id(self) -> int: ...
    @property
    def currency(self) -> str: ...
    @property
    def amount(self) -> Decimal: ...


@dataclass(frozen=True)
class Fiscal:
    rfc: str
    name: str
    regime: str
    postal_code: str
    cfdi_use: str


@dataclass(frozen=True)
class CheckoutRequest:
    product: str
    edition: str | None
    seats: int
    quantity: int
    currency: str
    email: str
    provider: str
    installments: int | None = None
    fiscal: Fiscal | None = None
    locale: str | None = None
    tenant_ref: str | None = None


@dataclass(frozen=True)
class OrderDraft:
    """What an order row is made of, every value decided here."""

    product_ref: str
    price_id: int
    edition: str | None
    seats: int
    quantity: int
    currency: str
    amount: Decimal
    buyer_email: str
    buyer_locale: str | None
    provider: str
    installments: int | None
    fiscal: dict[str, str] | None
    tenant_ref: str | None


def _installments(request: CheckoutRequest) -> int | None:
    count = request.installments
    if count is None:
        return None
    if request.provider == "mercadopago":
        if not 1 <= count <= MERCADOPAGO_MAX_INSTALLMENTS:
            raise CheckoutError(
                422,
                "installments_not_allowed",
                f"Mercado Pago offers 1 to {MERCADOPAGO_MAX_INSTALLMENTS} installments",
                "installments",
            )
        return count
    if request.provider == "stripe":
        if request.currency not in STRIPE_INSTALLMENT_CURRENCIES:
            raise CheckoutError(
                422,
                "installments_not_allowed",
                f"Stripe offers installments in MXN only, not {request.currency}",
                "installments",
            )
        if count not in STRIPE_INSTALLMENT_COUNTS:
            plans = ", ".join(str(n) for n in sorted(STRIPE_INSTALLMENT_COUNTS))
            raise CheckoutError(
                422,
                "installments_not_allowed",
                f"Stripe's installment plans are {plans} months",
                "installments",
            )
        return count
    raise CheckoutError(
        422,
        "installments_not_allowed",
        f"{request.provider} offers no installments",
        "installments",
    )


def _currency(request: CheckoutRequest) -> None:
    allowed = {"mercadopago": MERCADOPAGO_CURRENCIES, "bitso": BITSO_ASSETS}.get(request.provider)
    if allowed is not None and request.currency not in allowed:
        raise CheckoutError(
            422,
            "currency_not_allowed",
            f"{request.provider} does not charge in {request.currency} "
            f"(it does in {', '.join(sorted(allowed))})",
            "currency",
        )


def fiscal_fields(fiscal: Fiscal) -> dict[str, str]:
    """The receiver as the invoicing rules read it from a payment's metadata, checked by them
    and by the SAT catalogs they do not hold."""
    fields = {
        "rfc": fiscal.rfc.strip().upper(),
        "fiscal_name": fiscal.name.strip(),
        "fiscal_regime": fiscal.regime.strip(),
        "fiscal_postal_code": fiscal.postal_code.strip(),
        "cfdi_use": fiscal.cfdi_use.strip().upper(),
    }
    if not RFC.fullmatch(fields["rfc"]):
        raise CheckoutError(422, "invalid_fiscal_data", "the RFC is not an RFC", "fiscal.rfc")
    if fields["fiscal_regime"] not in FISCAL_REGIMES:
        raise CheckoutError(
            422,
            "invalid_fiscal_data",
            "the regime is not a SAT c_RegimenFiscal code",
            "fiscal.regime",
        )
    if not POSTAL_CODE.fullmatch(fields["fiscal_postal_code"]):
        raise CheckoutError(
            422, "invalid_fiscal_data", "the postal code has five digits", "fiscal.postal_code"
        )
    if fields["cfdi_use"] not in CFDI_USES:
        raise CheckoutError(
            422,
            "invalid_fiscal_data",
            "the CFDI use is not a SAT c_UsoCFDI code",
            "fiscal.cfdi_use",
        )
    try:
        invoicing.receiver_of(fields)
    except invoicing.FiscalDataError as exc:
        raise CheckoutError(422, "invalid_fiscal_data", str(exc), "fiscal") from None
    return fields


def draft_order(
    request: CheckoutRequest, product: Sellable | None, price: Priced | None
) -> OrderDraft:
    """The order a valid request makes of `product` at its live `price` (None: the product
    has none for this edition and currency), or CheckoutError."""
    if product is None or product.archived_at is not None:
        raise CheckoutError(
            404, "unknown_product", f"no product {request.product!r} is sold", "product"
        )
    try:
        email = normalize_email(request.email)
    except PolicyError:
        raise CheckoutError(
            422, "invalid_email", "email is not an email address", "email"
        ) from None
    if product.kind == "license":
        if request.edition not in product.editions:
            raise CheckoutError(
                422,
                "unknown_edition",
                f"{product.ref} has editions {', '.join(product.editions)}",
                "edition",
            )
        total_seats = request.seats * request.quantity
        if product.max_seats is not None and total_seats > product.max_seats:
            raise CheckoutError(
                422,
                "too_many_seats",
                f"{product.ref} sells at most {product.max_seats} seats per order",
                "seats",
            )
    elif request.edition is not None or request.seats != 1:
        raise CheckoutError(
            422, "invalid_plan_order", "a plan has no edition and one seat", "edition"
        )
    if price is None:
        raise CheckoutError(
            422,
            "no_price",
            f"{product.ref} has no live price in {request.currency}"
            + (f" for edition {request.edition}" if request.edition else ""),
            "currency",
        )
    _currency(request)
    installments = _installments(request)
    fiscal = None
    if request.fiscal is not None:
        if request.currency not in invoicing.SUPPORTED_CURRENCIES:
            raise CheckoutError(
                422,
                "invalid_fiscal_data",
                f"a CFDI is issued for MXN payments only, not {request.currency}",
                "fiscal",
            )
        fiscal = fiscal_fields(request.fiscal)
    amount = price.amount * request.seats * request.quantity
    return OrderDraft(
        product_ref=product.ref,
        price_id=price.id,
        edition=request.edition,
        seats=request.seats,
        quantity=request.quantity,
        currency=price.currency,
        amount=amount,
        buyer_email=email,
        buyer_locale=request.locale,
        provider=request.provider,
        installments=installments,
        fiscal=fiscal,
        tenant_ref=request.tenant_ref,
    )


class Ordered(Protocol):
    """The parts of a stored order the settlement reads (store.orders.Order has them)."""

    @property
    def id(self) -> Any: ...
    @property
    def product_ref(self) -> str: ...
    @property
    def edition(self) -> str | None: ...
    @property
    def seats(self) -> int: ...
    @property
    def quantity(self) -> int: ...
    @property
    def currency(self) -> str: ...
    @property
    def amount(self) -> Decimal: ...
    @property
    def buyer_email(self) -> str: ...
    @property
    def buyer_locale(self) -> str | None: ...
    @property
    def fiscal(self) -> dict[str, str] | None: ...
    @property
    def tenant_ref(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def payment_id(self) -> int | None: ...


# Every metadata key a follow-up reads (actors.payments, actors.licenses, the invoicing rules):
# on a payment linked to an order they come from the order alone, whatever the provider echoed.
FOLLOW_UP_KEYS = (
    "order_id",
    "product",
    "product_kind",
    "edition",
    "seats",
    "plan",
    "tenant_id",
    "locale",
    "email",
    *invoicing.RECEIVER_KEYS,
    "payment_form",
    "payment_method",
    "subscription",
)


@dataclass(frozen=True)
class FollowUpFields:
    """What a payment linked to an order carries for its follow-ups, all from the order."""

    customer_email: str
    customer_locale: str | None
    tenant_ref: str | None
    product_ref: str
    product_kind: str
    metadata: dict[str, str]


def follow_up_fields(order: Ordered, *, kind: str, plan: str | None) -> FollowUpFields:
    metadata = {
        "order_id": str(order.id),
        "product": order.product_ref,
        "product_kind": kind,
        "seats": str(order.seats * order.quantity),
        "email": order.buyer_email,
        **({"edition": order.edition} if order.edition else {}),
        **({"plan": plan} if plan else {}),
        **({"tenant_id": order.tenant_ref} if order.tenant_ref else {}),
        **({"locale": order.buyer_locale} if order.buyer_locale else {}),
        **(order.fiscal or {}),
    }
    return FollowUpFields(
        customer_email=order.buyer_email,
        customer_locale=order.buyer_locale,
        tenant_ref=order.tenant_ref,
        product_ref=order.product_ref,
        product_kind=kind,
        metadata=metadata,
    )


@dataclass(frozen=True)
class Settlement:
    """The order's new status (None: unchanged), why, and whether follow-ups may run."""

    status: str | None
    reason: str | None
    fulfil: bool


def settlement(
    order: Ordered, payment_id: int, status: str, amount_minor: int, currency: str
) -> Settlement:
    """What a payment status just applied does to its order."""
    if order.status == "held" or (order.status == "paid" and order.payment_id != payment_id):
        # Held for review, or another payment already paid it: nothing follows on its own.
        return Settlement(None, None, False)
    paid = Status(status)
    if paid is Status.APPROVED:
        code = currency.upper()
        if code != order.currency or amount_minor != to_minor(order.amount, order.currency):
            return Settlement(
                "held",
                f"paid {format_minor(amount_minor, code or 'XXX')}, "
                f"the order is {format_money(order.amount, order.currency)}",
                False,
            )
        return Settlement("paid", None, True)
    if paid in (Status.REJECTED, Status.CANCELLED) and order.status != "paid":
        return Settlement("failed", f"payment {paid.value}", True)
    return Settlement(None, None, True)
