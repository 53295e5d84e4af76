"""The email that carries a stamped invoice (XML and PDF attached), in the customer's language.

A template next to the license-delivery one in `colmena.gateways.mail`: it knows the email's
shape, not how the invoice was made.
"""

from __future__ import annotations

import html
from decimal import Decimal

from colmena.domain.money import format_money
from colmena.gateways.mail import RenderedEmail, language_for

_STRINGS = {
    "es": {
        "subject": "Factura {label} de {issuer}",
        "greeting": "Hola:",
        "body": "Adjuntamos la factura {label} (CFDI 4.0) por {total}, "
        "folio fiscal {uuid}, en XML y PDF.",
        "keep": "Conserva el archivo XML: es el comprobante fiscal; "
        "el PDF es su representación impresa.",
        "sandbox": "Es una factura de prueba del sandbox de colmena dev, sellada con el CSD de "
        "prueba del SAT: no tiene validez fiscal.",
    },
    "en": {
        "subject": "Invoice {label} from {issuer}",
        "greeting": "Hello,",
        "body": "Attached is invoice {label} (CFDI 4.0) for {total}, "
        "fiscal folio {uuid}, as XML and PDF.",
        "keep": "Keep the XML file: it is the tax document; the PDF is its printed form.",
        "sandbox": "This is a test invoice from colmena dev's sandbox, sealed with the SAT's "
        "test CSD: it has no fiscal validity.",
    },
}


def invoice_email(
    *,
    locale: str | None,
    issuer_name: str,
    label: str,
    total: Decimal,
    currency: str,
    uuid: str,
    sandbox: bool,
) -> RenderedEmail:
    """Subject, text and HTML announcing the attached XML and PDF; every value is escaped. A
    `sandbox` stamp (`colmena dev`'s PAC sandbox) is said to be one."""
    strings = _STRINGS[language_for(locale or "es")]
    values = {
        "label": label,
        "issuer": issuer_name,
        "total": format_money(total, currency),
        "uuid": uuid,
    }
    subject = strings["subject"].format(**values)
    paragraphs = [strings["greeting"], strings["body"].format(**values), strings["keep"]]
    if sandbox:
        paragraphs.append(strings["sandbox"])
    body = "".join(f"<p>{html.escape(p)}</p>\n" for p in paragraphs)
    return RenderedEmail(
        subject=subject,
        text="\n\n".join(paragraphs) + "\n",
        html='<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(subject)}</title></head>\n"
        f'<body style="font-family: sans-serif; line-height: 1.5;">\n{body}</body></html>\n',
    )
