"""The SAT's CFDI status service (ConsultaCFDIService): is a stamped CFDI in force, cancellable,
being cancelled? The only authority on a cancellation's outcome; colmena polls it.

Wraps satcfdi's client (``satcfdi.pacs.sat.SAT.status``), which builds the SOAP request the SAT
documents (``Consulta`` with ``expresionImpresa`` ``?re=<issuer>&rr=<receiver>&tt=<total>&id=
<uuid>``, SOAPAction ``http://tempuri.org/IConsultaCFDIService/Consulta``) and reads its
``ConsultaResult`` (``CodigoEstatus``, ``Estado``, ``EsCancelable``, ``EstatusCancelacion``,
``ValidacionEFOS``). What it lacks is added here: a timeout (satcfdi calls ``requests`` without
one), a configurable host (tests use a stand-in, tests/standins/sat_status.py), and typed errors.

Calls block (``requests``): run them in a thread from async code.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests
from lxml import etree
from satcfdi.cfdi import CFDI
from satcfdi.pacs import Environment
from satcfdi.pacs.sat import SAT
from satcfdi.utils import parser as satcfdi_parser

from colmena.config import Settings
from colmena.config.shared_client import SharedClient
from colmena.domain.cancellation import SatStatus
from colmena.errors import ColmenaError

PRODUCTION_URL = "https://consultaqr.facturaelectronica.sat.gob.mx"


class SatStatusUnavailable(ColmenaError):
    """The status service did not answer (timeout, connection, 5xx, unreadable body): ask later."""


class _Sat(SAT):
    """satcfdi's SAT client with a timeout and a host of the caller's choice."""

    def __init__(self, base_url: str, timeout: float):
        super().__init__(environment=Environment.PRODUCTION)
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout

    def _request(
        self,
        soap_url: str,
        data: Any,
        soap_action: str,
        needs_token_fn: Any,
        verify: bool = True,
    ) -> etree._Element:
        url = self._base_url + urlsplit(soap_url).path
        try:
            response = requests.post(
                url,
                data=data,
                headers=self._get_headers(soap_action, needs_token_fn=needs_token_fn),
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise SatStatusUnavailable(f"the SAT status service: {type(exc).__name__}") from exc
        if not response.ok:
            raise SatStatusUnavailable(
                f"the SAT status service answered HTTP {response.status_code}"
            )
        try:
            return etree.fromstring(response.content, parser=satcfdi_parser)
        except etree.XMLSyntaxError as exc:
            raise SatStatusUnavailable("the SAT status service answered no XML") from exc


class SatStatusClient:
    """``status(stamped_xml)``: what the SAT says of one stamped CFDI now."""

    def __init__(self, *, base_url: str = PRODUCTION_URL, timeout: float = 15.0):
        self._client = _Sat(base_url, timeout)

    def status(self, stamped_xml: bytes) -> SatStatus:
        try:
            result = self._client.status(CFDI.from_string(stamped_xml))
        except TypeError:  # satcfdi iterates a ConsultaResult it did not find
            raise SatStatusUnavailable(
                "the SAT status service answered without ConsultaResult"
            ) from None
        return SatStatus(
            codigo_estatus=result.get("CodigoEstatus") or "",
            estado=result.get("Estado") or "",
            es_cancelable=result.get("EsCancelable") or "",
            estatus_cancelacion=result.get("EstatusCancelacion") or "",
        )


def sat_status_client(settings: Settings) -> SatStatusClient:
    return SatStatusClient(
        base_url=settings.sat_status_url, timeout=settings.sat_status_timeout_seconds
    )


SAT_STATUS: SharedClient[SatStatusClient] = SharedClient("sat-status", sat_status_client)
