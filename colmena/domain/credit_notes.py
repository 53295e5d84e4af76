"""Refunds on an invoiced payment: how much to credit, and the CFDI de Egreso that credits it.

A refund is read as the payment's *cumulative* refunded amount (Stripe's `amount_refunded`,
Mercado Pago's `transaction_amount_refunded`), never as the delta of one event: events arrive
twice or out of order, and a cumulative figure makes each credit note the difference between
it and what earlier notes already credited. A stale figure (at or below what is credited)
credits nothing.

Fiscal rules the Egreso follows (Anexo 20, Guía de llenado del CFDI 4.0, Apéndice 5 "Emisión
de CFDI de Egresos", and its catalogue of uses):

- TipoDeComprobante E, related to the credited CFDI with TipoRelacion 01 (nota de crédito de
  los documentos relacionados), its UUID in CfdiRelacionado.
- The receiver of the original, with UsoCFDI G02 (devoluciones, descuentos o bonificaciones)
  where the receiver's régimen allows G02, S01 otherwise (público en general among them).
- One concept 84111506 "Servicios de facturación", unit ACT, for the refunded amount, taxed
  like the original (IVA in proportion: the refund includes IVA as the charge did, and is split
  with `split_iva` so base + IVA is the refund to the cent).
- MetodoPago PUE (an Egreso is settled when issued); FormaPago the original's, since the money
  goes back the way it came.
- Never more than the original's remaining amount: the notes of one payment together never
  exceed what its invoice billed.

A refund of the whole amount can end in a cancellation instead (`COLMENA_CFDI_FULL_REFUND`):
the SAT then shows no income at all, which suits a sale undone in the same period. Credit
notes keep the original valid and record the refund as a deduction, which is the only way once
the original can no longer be cancelled (past the fiscal year's cancellation deadline, or while
it has credit notes related to it: the SAT refuses to cancel a CFDI with live related CFDIs).
So a whole refund is a cancellation only when the policy says so *and* nothing was credited yet.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from colmena.domain.invoicing import (
    Billable,
    Concept,
    ConceptDefaults,
    FiscalDataError,
    Invoice,
    Issuer,
    Receiver,
    description_of,
    split_iva,
)
from colmena.domain.money import from_minor

EGRESO = "E"
CREDIT_NOTE_RELATION = "01"
CREDIT_NOTE_PRODUCT_KEY = "84111506"
CREDIT_NOTE_UNIT_KEY = "ACT"
REFUND_USE = "G02"
NO_FISCAL_EFFECT_USE = "S01"
# The receivers' régimenes for which the SAT's catálogo c_UsoCFDI allows G02.
G02_REGIMES = frozenset(
    {"601", "603", "606", "612", "620", "621", "622", "623", "624", "625", "626"}
)


class FullRefund(StrEnum):
    """What a refund of the whole amount becomes (COLMENA_CFDI_FULL_REFUND)."""

    CANCEL = "cancel"
    CREDIT_NOTE = "credit_note"


class CreditNoteRefused(FiscalDataError):
    """The refund cannot be credited as asked (over the remaining amount, bad figures)."""


@dataclass(frozen=True)
class CreditNote:
    """A CFDI de Egreso: the document, and the UUID of the CFDI it credits."""

    invoice: Invoice
    related_uuid: str


@dataclass(frozen=True)
class RefundDecision:
    """What a refund figure calls for: `credit_minor` to credit now (0: nothing), or a
    cancellation of the original instead."""

    credit_minor: int
    cancel: bool = False


def decide_refund(
    *, billed_minor: int, credited_minor: int, refunded_minor: int, policy: FullRefund
) -> RefundDecision:
    """Credit the refunded amount not yet credited; refuse more than was billed.

    ``credited_minor`` is the cumulative refund the payment's notes already cover (the highest
    `refunded_minor` they were issued for).
    """
    if billed_minor <= 0 or credited_minor < 0 or refunded_minor < 0:
        raise CreditNoteRefused(
            f"bad refund figures: billed {billed_minor}, credited {credited_minor}, "
            f"refunded {refunded_minor}"
        )
    if refunded_minor > billed_minor:
        raise CreditNoteRefused(
            f"a refund of {refunded_minor} is over the {billed_minor - credited_minor} "
            f"remaining of the {billed_minor} invoiced (minor units)"
        )
    if refunded_minor <= credited_minor:
        return RefundDecision(credit_minor=0)
    whole = refunded_minor == billed_minor and credited_minor == 0
    if whole and policy is FullRefund.CANCEL:
        return RefundDecision(credit_minor=0, cancel=True)
    return RefundDecision(credit_minor=refunded_minor - credited_minor)


def refund_receiver(original: Receiver) -> Receiver:
    """The original's receiver, with the use a credit note carries."""
    use = REFUND_USE if original.regime in G02_REGIMES else NO_FISCAL_EFFECT_USE
    return replace(original, cfdi_use=use)


def credit_note_for(
    payment: Billable,
    *,
    amount_minor: int,
    related_uuid: str,
    receiver: Receiver,
    payment_form: str,
    issuer: Issuer,
    series: str,
    folio: int,
    defaults: ConceptDefaults,
) -> CreditNote:
    """The Egreso crediting ``amount_minor`` of the payment's CFDI ``related_uuid``;
    ``receiver`` is that CFDI's receiver (the payment's buyer, or público en general)."""
    if amount_minor <= 0:
        raise CreditNoteRefused(f"a credit note of {amount_minor} credits nothing")
    amount = from_minor(amount_minor, payment.currency.upper())
    if defaults.iva_rate is None:
        unit_price, iva = amount, None
    else:
        unit_price, iva = split_iva(amount, defaults.iva_rate)
    concept = Concept(
        product_key=CREDIT_NOTE_PRODUCT_KEY,
        unit_key=CREDIT_NOTE_UNIT_KEY,
        description=f"Devolución: {description_of(payment)}",
        unit_price=unit_price,
        iva_amount=iva,
        sku=payment.product_ref,
    )
    document = Invoice(
        issuer=issuer,
        receiver=refund_receiver(receiver),
        series=series,
        folio=str(folio),
        payment_form=payment_form,
        payment_method="PUE",
        concepts=(concept,),
        currency=payment.currency.upper(),
        iva_rate=defaults.iva_rate,
    )
    return CreditNote(invoice=document, related_uuid=related_uuid)
