"""The CFDI global for público en general: which period closes when, and what the document says.

Sales whose buyer gave no RFC get no individual invoice; the SAT still wants each of them on a
CFDI. Regla 2.7.1.21 of the RMF (the CFDI 4.0 rule for operations with the público en general)
and the SAT's "Guía de llenado del CFDI global, versión 4.0" say how:

- the receiver is the generic RFC XAXX010101000, named PUBLICO EN GENERAL, régimen 616 (sin
  obligaciones fiscales), UsoCFDI S01 (sin efectos fiscales), DomicilioFiscalReceptor equal to
  the issuer's LugarExpedicion;
- InformacionGlobal gives the period: Periodicidad (c_Periodicidad: 01 diario, 04 mensual are
  the two colmena offers), Meses (c_Meses 01-12: the month of the day or the month itself) and
  Año;
- one Concepto per sale: ClaveProdServ 01010101, ClaveUnidad ACT, Cantidad 1, Descripcion
  "Venta", NoIdentificacion the sale's folio or operation number, ValorUnitario its amount
  before tax;
- FormaPago is the form by which the largest amount was received;
- it is issued within 24 hours of the period's close.

Periods are days or months of Mexico City's calendar (where the issuer's operations close);
their bounds are handed to storage as UTC instants.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Protocol
from zoneinfo import ZoneInfo

from colmena.domain.invoicing import (
    PAYMENT_METHODS,
    Billable,
    Concept,
    ConceptDefaults,
    FiscalDataError,
    Invoice,
    Issuer,
    Receiver,
    amount_of,
    split_iva,
)

MEXICO_CITY = ZoneInfo("America/Mexico_City")
GENERIC_RFC = "XAXX010101000"
GENERIC_NAME = "PUBLICO EN GENERAL"
GENERIC_REGIME = "616"
GENERIC_USE = "S01"
SALE_PRODUCT_KEY = "01010101"
SALE_UNIT_KEY = "ACT"
SALE_DESCRIPTION = "Venta"


class Periodicity(StrEnum):
    """COLMENA_CFDI_GLOBAL_PERIOD's values; `code` is the SAT's c_Periodicidad key."""

    DAILY = "daily"
    MONTHLY = "monthly"

    @property
    def code(self) -> str:
        return "01" if self is Periodicity.DAILY else "04"

    @classmethod
    def of_code(cls, code: str) -> Periodicity:
        for periodicity in cls:
            if periodicity.code == code:
                return periodicity
        raise ValueError(f"c_Periodicidad {code!r} is not one colmena issues (01, 04)")


@dataclass(frozen=True)
class Period:
    """A closed span of Mexico City's calendar: [first, after)."""

    periodicity: Periodicity
    first: dt.date
    after: dt.date

    @property
    def starts_at(self) -> dt.datetime:
        return _midnight(self.first)

    @property
    def ends_at(self) -> dt.datetime:
        return _midnight(self.after)

    @property
    def months(self) -> str:
        """c_Meses: the month the day belongs to, or the month itself."""
        return f"{self.first.month:02d}"

    @property
    def year(self) -> int:
        return self.first.year

    def previous(self) -> Period:
        return period_containing(self.periodicity, self.first - dt.timedelta(days=1))


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=MEXICO_CITY).astimezone(dt.UTC)


def period_containing(periodicity: Periodicity, day: dt.date) -> Period:
    if periodicity is Periodicity.DAILY:
        return Period(periodicity, day, day + dt.timedelta(days=1))
    first = day.replace(day=1)
    after = (first + dt.timedelta(days=32)).replace(day=1)
    return Period(periodicity, first, after)


def last_closed(periodicity: Periodicity, now: dt.datetime) -> Period:
    """The latest period that has ended by `now` (an aware instant), in Mexico City's calendar."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    today = now.astimezone(MEXICO_CITY).date()
    return period_containing(periodicity, today).previous()


class Sale(Billable, Protocol):
    """A payment as the global invoice reads it: its provider's id is the operation number."""

    @property
    def provider_payment_id(self) -> str: ...


@dataclass(frozen=True)
class GlobalInvoice:
    """The Ingreso to público en general and the period its InformacionGlobal names."""

    invoice: Invoice
    periodicity: str
    months: str
    year: int


def public_receiver(issuer: Issuer) -> Receiver:
    return Receiver(
        rfc=GENERIC_RFC,
        name=GENERIC_NAME,
        regime=GENERIC_REGIME,
        postal_code=issuer.postal_code,
        cfdi_use=GENERIC_USE,
    )


def sale_concept(sale: Sale, iva_rate: Decimal | None) -> Concept:
    """One sale as the guide wants it: amount before tax, its IVA split from the total charged
    (see `split_iva`), and its operation number as NoIdentificacion."""
    total, _ = amount_of(sale)
    if total <= 0:
        raise FiscalDataError(f"sale {sale.provider_payment_id} of {total} is not invoiced")
    unit_price, iva = (total, None) if iva_rate is None else split_iva(total, iva_rate)
    return Concept(
        product_key=SALE_PRODUCT_KEY,
        unit_key=SALE_UNIT_KEY,
        description=SALE_DESCRIPTION,
        unit_price=unit_price,
        iva_amount=iva,
        sku=sale.provider_payment_id,
    )


def _payment_form(sales: Sequence[Sale], default: str) -> str:
    """The FormaPago by which the largest amount was received (ties: the lowest key)."""
    received: dict[str, int] = {}
    for sale in sales:
        form = str(sale.metadata.get("payment_form") or default).strip()
        received[form] = received.get(form, 0) + sale.amount_minor
    return min(received, key=lambda form: (-received[form], form))


def global_invoice_for(
    sales: Sequence[Sale],
    *,
    period: Period,
    issuer: Issuer,
    series: str,
    folio: int,
    defaults: ConceptDefaults,
) -> GlobalInvoice:
    """The CFDI global of `period` for `sales` (in the order given: their concepts' order)."""
    if not sales:
        raise FiscalDataError("a global invoice needs at least one sale")
    invoice = Invoice(
        issuer=issuer,
        receiver=public_receiver(issuer),
        series=series,
        folio=str(folio),
        payment_form=_payment_form(sales, defaults.payment_form),
        payment_method=PAYMENT_METHODS[0],
        concepts=tuple(sale_concept(sale, defaults.iva_rate) for sale in sales),
        iva_rate=defaults.iva_rate,
    )
    return GlobalInvoice(
        invoice=invoice,
        periodicity=period.periodicity.code,
        months=period.months,
        year=period.year,
    )
