"""From an approved payment to the CFDI that bills it: plain data in, a document out.

Amounts: the payment's amount is what the customer was charged, so it is the invoice's Total
and includes IVA (Mexican consumer prices are quoted with tax included). The Total is fixed
first and split into base and IVA with ``split_iva``; letting satcfdi add round(base x 16 %)
to a rounded base cannot reach every total (base + IVA steps by 0.02 now and then), and an
invoice that disagrees with the charge by a cent is wrong.

The document types (``Invoice`` and its parts) live here, not in the CFDI gateway, because
they are what these rules decide; ``colmena.gateways.cfdi`` seals and validates them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

from colmena.domain.money import from_minor
from colmena.errors import PermanentError

CENT = Decimal("0.01")
DEFAULT_IVA_RATE = Decimal("0.16")
# Only MXN: another currency needs TipoCambio (Banxico's FIX rate of the day), not implemented.
SUPPORTED_CURRENCIES = frozenset({"MXN"})
PAYMENT_METHODS = ("PUE", "PPD")
RECEIVER_KEYS = ("rfc", "fiscal_name", "fiscal_regime", "fiscal_postal_code", "cfdi_use")
_RFC = re.compile(r"^[A-ZÑ&]{3,4}\d{6}[A-Z\d]{3}$")


class FiscalDataError(PermanentError):
    """The payment cannot be invoiced as it is (missing or malformed fiscal data, currency)."""


class Billable(Protocol):
    """What an invoice is made from: the parts of a payment these rules read."""

    @property
    def amount_minor(self) -> int: ...
    @property
    def currency(self) -> str: ...
    @property
    def customer_email(self) -> str | None: ...
    @property
    def product_ref(self) -> str | None: ...
    @property
    def product_kind(self) -> str | None: ...
    @property
    def metadata(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Issuer:
    rfc: str
    name: str
    regime: str
    postal_code: str


@dataclass(frozen=True)
class Receiver:
    rfc: str
    name: str
    regime: str
    postal_code: str
    cfdi_use: str


@dataclass(frozen=True)
class Concept:
    product_key: str
    unit_key: str
    description: str
    unit_price: Decimal
    quantity: Decimal = Decimal(1)
    sku: str | None = None
    # The IVA of this concept when the total was fixed first (a price that includes IVA);
    # None lets satcfdi compute round(Importe x rate). See split_iva.
    iva_amount: Decimal | None = None


@dataclass(frozen=True)
class Invoice:
    """What a CFDI of type Ingreso needs; ``iva_rate=None`` marks concepts as not subject to tax."""

    issuer: Issuer
    receiver: Receiver
    series: str
    folio: str
    payment_form: str
    payment_method: str
    concepts: tuple[Concept, ...]
    currency: str = "MXN"
    iva_rate: Decimal | None = DEFAULT_IVA_RATE
    issued_at: dt.datetime | None = None


@dataclass(frozen=True)
class ConceptDefaults:
    product_key: str
    unit_key: str
    payment_form: str
    iva_rate: Decimal | None


def split_iva(total: Decimal, rate: Decimal) -> tuple[Decimal, Decimal]:
    """(base, IVA) in cents with base + IVA == total exactly.

    IVA = total - round(total / (1 + rate)) is within (1 + rate) x 0.005 < 0.01 of
    round(base x rate), so it is one of the two cent values around base x rate, which is what
    the SAT's bounds on a Traslado's Importe accept (validation CFDI40168 et al.).
    """
    if total != total.quantize(CENT):
        raise ValueError(f"total {total} has fractions of a cent")
    base = (total / (1 + rate)).quantize(CENT, rounding=ROUND_HALF_UP)
    return base, total - base


def amount_of(payment: Billable) -> tuple[Decimal, str]:
    currency = payment.currency.upper()
    if currency not in SUPPORTED_CURRENCIES:
        raise FiscalDataError(
            f"currency {currency} is not invoiced: only MXN (no TipoCambio support)"
        )
    return from_minor(payment.amount_minor, currency), currency


def receiver_of(metadata: Mapping[str, Any]) -> Receiver:
    missing = [key for key in RECEIVER_KEYS if not str(metadata.get(key) or "").strip()]
    if missing:
        raise FiscalDataError(f"payment metadata lacks {', '.join(missing)}")
    rfc = str(metadata["rfc"]).strip().upper()
    if not _RFC.match(rfc):
        raise FiscalDataError(f"receiver RFC {rfc!r} is not an RFC")
    return Receiver(
        rfc=rfc,
        name=str(metadata["fiscal_name"]).strip(),
        regime=str(metadata["fiscal_regime"]).strip(),
        postal_code=str(metadata["fiscal_postal_code"]).strip(),
        cfdi_use=str(metadata["cfdi_use"]).strip().upper(),
    )


def description_of(payment: Billable) -> str:
    metadata = payment.metadata
    product = str(payment.product_ref or metadata.get("product") or "Servicio")
    if payment.product_kind == "license":
        edition = metadata.get("edition")
        return f"Licencia de software {product}" + (f" edición {edition}" if edition else "")
    if payment.product_kind == "plan":
        return f"Suscripción {product} plan {metadata.get('plan') or ''}".strip()
    return product


def invoice_for(
    payment: Billable, *, issuer: Issuer, series: str, folio: int, defaults: ConceptDefaults
) -> Invoice:
    """The CFDI (type Ingreso, one concept) for an approved payment, Total = amount charged."""
    total, currency = amount_of(payment)
    if total <= 0:
        raise FiscalDataError("a payment of 0 is not invoiced")
    metadata = payment.metadata
    method = str(metadata.get("payment_method") or "PUE").strip().upper()
    if method not in PAYMENT_METHODS:
        raise FiscalDataError(f"payment_method {method!r} is not PUE or PPD")
    form = str(metadata.get("payment_form") or defaults.payment_form).strip()
    if defaults.iva_rate is None:
        unit_price, iva = total, None
    else:
        unit_price, iva = split_iva(total, defaults.iva_rate)
    concept = Concept(
        product_key=defaults.product_key,
        unit_key=defaults.unit_key,
        description=description_of(payment),
        unit_price=unit_price,
        iva_amount=iva,
        sku=payment.product_ref,
    )
    return Invoice(
        issuer=issuer,
        receiver=receiver_of(metadata),
        series=series,
        folio=str(folio),
        payment_form=form,
        payment_method=method,
        concepts=(concept,),
        currency=currency,
        iva_rate=defaults.iva_rate,
    )


def recipient_of(payment: Billable) -> str | None:
    address = payment.customer_email or payment.metadata.get("email")
    return str(address).strip() if address else None
