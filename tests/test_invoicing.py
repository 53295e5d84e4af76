"""From a payment to its CFDI: the total is what was charged, to the cent, IVA included."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_HALF_UP, Decimal

import pytest
from lxml import etree

from colmena.domain.invoicing import (
    ConceptDefaults,
    FiscalDataError,
    Issuer,
    invoice_for,
    split_iva,
)
from colmena.errors import is_permanent
from colmena.gateways.cfdi import load_signer, sign_invoice
from colmena.gateways.invoice_email import invoice_email
from colmena.store.payments import Payment
from tests.standins.csd import (
    ISSUER_NAME,
    ISSUER_RFC,
    RECEIVER_NAME,
    RECEIVER_RFC,
    make_ca,
    make_csd,
)

CFDI4 = "{http://www.sat.gob.mx/cfd/4}"
RATE = Decimal("0.16")
CENT = Decimal("0.01")
DEFAULTS = ConceptDefaults(product_key="81112100", unit_key="E48", payment_form="04", iva_rate=RATE)
ISSUER = Issuer(rfc=ISSUER_RFC, name=ISSUER_NAME, regime="601", postal_code="42501")


def payment(amount_minor: int, *, currency: str = "mxn", **metadata: str) -> Payment:
    now = dt.datetime.now(dt.UTC)
    return Payment(
        id=1,
        provider="stripe",
        provider_payment_id="pi_1",
        amount_minor=amount_minor,
        currency=currency,
        customer_email="compras@example.test",
        customer_locale="es-MX",
        tenant_ref=None,
        product_ref="colmena-pro",
        product_kind="license",
        metadata={
            "rfc": RECEIVER_RFC,
            "fiscal_name": RECEIVER_NAME,
            "fiscal_regime": "601",
            "fiscal_postal_code": "86991",
            "cfdi_use": "G03",
            "payment_form": "03",
            **metadata,
        },
        status="approved",
        status_at=now,
        approved_at=now,
        created_at=now,
        updated_at=now,
    )


def naive_total(base: Decimal) -> Decimal:
    """What adding round(base x 16 %) to a base in cents gives (satcfdi's own computation)."""
    return base + (base * RATE).quantize(CENT, rounding=ROUND_HALF_UP)


def test_split_iva_hits_every_total_within_the_sats_bounds() -> None:
    for cents in range(1, 300_001):
        total = Decimal(cents).scaleb(-2)
        base, iva = split_iva(total, RATE)
        assert base + iva == total
        # SAT: Importe between (Base - 0.005) x Tasa truncated and (Base + 0.005) x Tasa rounded up.
        low = ((base - Decimal("0.005")) * RATE).quantize(CENT, rounding=ROUND_DOWN)
        high = ((base + Decimal("0.005") - Decimal("1e-12")) * RATE).quantize(
            CENT, rounding=ROUND_CEILING
        )
        assert low <= iva <= high, total


def test_a_total_that_base_plus_rounded_iva_cannot_reach_is_invoiced_exactly() -> None:
    reachable = {naive_total(Decimal(c).scaleb(-2)) for c in range(1, 20_000)}
    unreachable = next(
        Decimal(c).scaleb(-2) for c in range(100, 20_000) if Decimal(c).scaleb(-2) not in reachable
    )
    ca = make_ca()
    csd = make_csd(ca)
    signer = load_signer(csd.certificate, csd.key, csd.password)

    document = invoice_for(
        payment(int(unreachable * 100)), issuer=ISSUER, series="A", folio=7, defaults=DEFAULTS
    )
    root = etree.fromstring(sign_invoice(document, signer).xml)

    assert Decimal(root.attrib["Total"]) == unreachable
    base = Decimal(root.attrib["SubTotal"])
    taxes = root.find(f"{CFDI4}Impuestos")
    assert taxes is not None
    assert base + Decimal(taxes.attrib["TotalImpuestosTrasladados"]) == unreachable
    assert (root.attrib["Folio"], root.attrib["FormaPago"], root.attrib["MetodoPago"]) == (
        "7",
        "03",
        "PUE",
    )
    assert root.attrib["Moneda"] == "MXN"


def test_untaxed_invoice_bills_the_amount_as_is() -> None:
    untaxed = ConceptDefaults(
        product_key="81112100", unit_key="E48", payment_form="04", iva_rate=None
    )
    document = invoice_for(payment(99_999), issuer=ISSUER, series="A", folio=1, defaults=untaxed)
    assert (
        document.concepts[0].unit_price == Decimal("999.99")
        and document.concepts[0].iva_amount is None
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"currency": "usd"}, "only MXN"),
        ({"rfc": ""}, "lacks rfc"),
        ({"rfc": "not-an-rfc"}, "not an RFC"),
        ({"payment_method": "XYZ"}, "PUE or PPD"),
    ],
)
def test_unusable_payments_are_refused(change: dict[str, str], message: str) -> None:
    currency = change.pop("currency", "mxn")
    with pytest.raises(FiscalDataError, match=message) as refused:
        invoice_for(
            payment(1000, currency=currency, **change),
            issuer=ISSUER,
            series="A",
            folio=1,
            defaults=DEFAULTS,
        )
    assert is_permanent(refused.value)  # the same payment is refused the same way next time


def test_email_is_escaped_and_follows_the_locale() -> None:
    spanish = invoice_email(
        locale="es-MX",
        issuer_name="<b>X</b>",
        label="A1",
        total=Decimal(1160),
        currency="MXN",
        uuid="U",
        sandbox=False,
    )
    english = invoice_email(
        locale="en",
        issuer_name="X",
        label="A1",
        total=Decimal(1160),
        currency="MXN",
        uuid="U",
        sandbox=True,
    )
    assert spanish.subject.startswith("Factura A1")
    assert "<b>X</b>" not in spanish.html and "&lt;b&gt;X" in spanish.html
    assert "1,160.00 MXN" in spanish.text
    assert "sandbox" not in spanish.text
    assert english.subject.startswith("Invoice A1")
    assert "for 1,160.00 MXN," in english.text
    assert "test invoice from colmena dev's sandbox" in english.text
