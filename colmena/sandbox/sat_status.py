"""The SAT's CFDI status service (ConsultaCFDIService) in its SOAP shape, for the PAC sandbox and
the tests' stand-in: the question it reads and the answer it writes.

The question (what satcfdi's ``SAT.status`` sends): ``tem:Consulta/tem:expresionImpresa`` holding
``?re=<issuer>&rr=<receiver>&tt=<total>&id=<uuid>``. The answer (as phpcfdi/sat-estado-cfdi
records the real service's): ``s:Envelope/s:Body/ConsultaResponse/ConsultaResult`` with
``a:CodigoEstatus``, ``a:EsCancelable``, ``a:Estado``, ``a:EstatusCancelacion`` and
``a:ValidacionEFOS``, ``a`` being the data-contract namespace below.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from lxml import etree

SOAP_ACTION = "http://tempuri.org/IConsultaCFDIService/Consulta"
TEMPURI = "http://tempuri.org/"
RESULT_NS = "http://schemas.datacontract.org/2004/07/Sat.Cfdi.Negocio.ConsultaCfdi.Servicio"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
FOUND = "S - Comprobante obtenido satisfactoriamente."
NOT_FOUND = ("N - 602: Comprobante no encontrado.", "", "No Encontrado", "")


def question(body: bytes) -> dict[str, str]:
    """``re``, ``rr``, ``tt`` and ``id`` of a Consulta request."""
    expression = etree.fromstring(body).findtext(f".//{{{TEMPURI}}}expresionImpresa") or ""
    return {key: values[0] for key, values in parse_qs(expression.lstrip("?")).items()}


def answer(codigo: str, es_cancelable: str, estado: str, estatus: str) -> bytes:
    """The ConsultaResponse envelope with these four fields."""
    envelope = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"s": SOAP})
    body = etree.SubElement(envelope, f"{{{SOAP}}}Body")
    response = etree.SubElement(body, f"{{{TEMPURI}}}ConsultaResponse", nsmap={None: TEMPURI})
    result = etree.SubElement(response, f"{{{TEMPURI}}}ConsultaResult", nsmap={"a": RESULT_NS})
    for name, value in (
        ("CodigoEstatus", codigo),
        ("EsCancelable", es_cancelable),
        ("Estado", estado),
        ("EstatusCancelacion", estatus),
        ("ValidacionEFOS", "200"),
    ):
        etree.SubElement(result, f"{{{RESULT_NS}}}{name}").text = value
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
