"""PAC gateway: has a sealed CFDI 4.0 stamped (timbrado) by a PAC, never twice.

Wraps satcfdi's PAC clients (``satcfdi.pacs``) instead of re-implementing their wire formats,
and adds what they lack:

- an HTTP timeout (satcfdi calls ``requests`` without one, so a stuck PAC hangs a worker
  forever) and a configurable base URL (tests talk to a local stand-in);
- typed outcomes. A timeout or a connection lost after sending is *ambiguous*: the PAC may
  have stamped. The cure is the same call again with the same XML and reference: the PAC's
  duplicate guards (SAT's 307 "timbre previo" on the same sealed XML, SW's ``customid``)
  turn the repeat into "here is the stamp you already have", which ``stamp`` returns as a
  result with ``recovered=True``. So "was it stamped?" is answered by ``stamp`` itself;
  SW offers no read-only lookup by customid, only by UUID (``recover``).

Only SW Sapien is exercised end to end (tests/standins/pac.py and `colmena dev`'s PAC sandbox,
colmena/sandbox/pac.py, speak its REST format).
Finkok, Diverza and Prodigia get the same timeout, base URL and error typing; Finkok's 307
is recovered through its ``stamped`` operation.

Calls block (``requests``): run them in a thread from async code.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid as uuid_module
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import requests
import structlog
from lxml import etree
from pydantic import SecretStr
from satcfdi import __version__ as satcfdi_version
from satcfdi.cfdi import CFDI
from satcfdi.exceptions import ResponseError
from satcfdi.pacs import Environment
from satcfdi.pacs.diverza import Diverza
from satcfdi.pacs.finkok import Finkok
from satcfdi.pacs.prodigia import Prodigia
from satcfdi.pacs.swsapien import SWSapien
from urllib3.exceptions import NewConnectionError

from colmena.config import Settings
from colmena.config.shared_client import SharedClient
from colmena.errors import ColmenaError
from colmena.gateways.cfdi import TFD

log = structlog.get_logger(__name__)

MEXICO_CITY = ZoneInfo("America/Mexico_City")
DUPLICATE_CODES = frozenset({"307", "CFDI3307"})
_CODE = re.compile(r"^\s*([A-Za-z]*\d+)\s*(?:[.\-:]|$)")


class Provider(StrEnum):
    SW = "sw"
    FINKOK = "finkok"
    DIVERZA = "diverza"
    PRODIGIA = "prodigia"


class PacError(ColmenaError):
    """Base of everything the gateway raises; retryable unless a subclass says not."""


class PacAmbiguous(PacError):
    """The request may have reached the PAC: retry ``stamp`` with the same XML and reference."""


class PacTimeout(PacAmbiguous):
    """No answer within the configured timeout."""


class PacUnavailable(PacError):
    """The PAC answered 5xx or could not be reached; nothing was stamped. Retry with backoff."""


class PacRejected(PacError):
    """The PAC refused the document (validation, credentials). Retrying cannot help."""

    retryable = False

    def __init__(self, code: str, message: str, detail: str | None = None):
        self.code = code
        self.message = message
        self.detail = detail
        super().__init__(f"{code}: {message}" + (f" ({detail})" if detail else ""))


class PacForeignStamp(PacRejected):
    """The stamp the PAC returned certifies another document: a reference reused on a shared
    PAC account hands back someone else's stamp, which must never be filed as ours."""

    def __init__(self, uuid: str):
        super().__init__(
            "FOREIGN_STAMP", f"the PAC returned stamp {uuid}, which certifies another document"
        )


@dataclass(frozen=True)
class PacCredentials:
    """Per provider: SW ``token`` or ``user``+``password``; Finkok ``user``+``password``;
    Prodigia ``user``+``password``+``contract``; Diverza ``client_id``+``token``+``issuer_rfc``."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    contract: str | None = None
    client_id: str | None = None
    issuer_rfc: str | None = None


@dataclass(frozen=True)
class StampResult:
    xml: bytes
    uuid: str
    fecha_timbrado: dt.datetime
    recovered: bool


def parse_stamp(xml: bytes, *, recovered: bool) -> StampResult:
    """UUID and FechaTimbrado from the TimbreFiscalDigital; the date is Mexico City local time."""
    tfd = etree.fromstring(xml).find(f".//{TFD}")
    if tfd is None:
        raise PacUnavailable("the PAC returned a CFDI without TimbreFiscalDigital")
    return StampResult(
        xml=xml,
        uuid=tfd.attrib["UUID"].upper(),
        fecha_timbrado=dt.datetime.fromisoformat(tfd.attrib["FechaTimbrado"]).replace(
            tzinfo=MEXICO_CITY
        ),
        recovered=recovered,
    )


def check_certifies(result: StampResult, signed_xml: bytes) -> None:
    """Refuse a stamp whose TimbreFiscalDigital does not certify the seal of ``signed_xml``.

    Not part of ``stamp``: a stamp recovered by reference is only known to be ours here.
    """
    tfd = etree.fromstring(result.xml).find(f".//{TFD}")
    certified = tfd.attrib.get("SelloCFD") if tfd is not None else None
    if certified != etree.fromstring(signed_xml).attrib["Sello"]:
        raise PacForeignStamp(result.uuid)


def _code_of(message: str, fallback: str) -> str:
    match = _CODE.match(message)
    return match.group(1).upper() if match else fallback


def _send(method: str, url: str, timeout: float, **kwargs: Any) -> requests.Response:
    """One HTTP exchange with the PAC, transport failures and 5xx mapped to gateway errors."""
    try:
        response = requests.request(method=method, url=url, timeout=timeout, **kwargs)
    except requests.Timeout as exc:
        raise PacTimeout(f"no answer from the PAC within {timeout}s") from exc
    except requests.ConnectionError as exc:
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        if isinstance(reason, NewConnectionError):
            raise PacUnavailable("cannot connect to the PAC") from exc
        raise PacAmbiguous("connection to the PAC lost before its answer") from exc
    if response.status_code >= 500:
        raise PacUnavailable(f"PAC answered HTTP {response.status_code}")
    return response


class _AlreadyStamped(Exception):
    def __init__(self, code: str, data: dict[str, Any]):
        self.code = code
        self.data = data
        super().__init__(code)


class _SignedDocument(CFDI):
    """A parsed CFDI that serializes to the exact bytes that were sealed and validated, so the
    PAC receives what was checked rather than satcfdi's re-serialization of it."""

    raw: bytes

    @classmethod
    def of(cls, xml: bytes) -> _SignedDocument:
        document = cls.from_string(xml)
        document.raw = xml
        return document

    def xml_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        return self.raw


class _SW(SWSapien):
    """SW Sapien REST with a timeout, configurable hosts and SW's error body kept."""

    def __init__(
        self,
        credentials: PacCredentials,
        environment: Environment,
        services_url: str | None,
        api_url: str | None,
        timeout: float,
    ):
        super().__init__(
            token=credentials.token,
            user=credentials.user,
            password=credentials.password,
            environment=environment,
        )
        self.token = None
        self.expires_in = 0.0
        self._urls = {"services": services_url, "api": api_url}
        self._timeout = timeout

    def _host(self, service: str = "services") -> str:
        return (self._urls.get(service) or super()._host(service)).rstrip("/")

    def _authenticate(self, user: str, password: str) -> dict[str, Any]:
        # satcfdi reads token/expires_in at the top level; SW nests them under "data".
        return super()._authenticate(user, password)["data"]

    def _request(
        self,
        path: str,
        headers: dict[str, str] | None = None,
        method: str = "post",
        files: Any = None,
        json: Any = None,
        needs_token: bool = True,
        service: str = "services",
    ) -> dict[str, Any]:
        response = _send(
            method,
            f"{self._host(service)}/{path.lstrip('/')}",
            self._timeout,
            headers={
                "Cache-Control": "no-cache",
                "Authorization": self.token_fn() if needs_token else "",
                "User-Agent": satcfdi_version.__user_agent__,
                **(headers or {}),
            },
            json=json,
            files=files,
        )
        try:
            body = response.json()
        except ValueError:
            raise PacRejected(
                str(response.status_code), f"non-JSON answer, HTTP {response.status_code}"
            ) from None
        if response.ok and body.get("status") == "success":
            return body
        message = body.get("message") or f"HTTP {response.status_code}"
        code = _code_of(message, str(response.status_code))
        if code in DUPLICATE_CODES:
            raise _AlreadyStamped(code, body.get("data") or {})
        raise PacRejected(code, message, body.get("messageDetail"))

    def download(self, url: str) -> bytes:
        """Fetch a stored XML; SW's ``urlXml`` is a pre-signed link, so no token is sent."""
        response = _send("get", url, self._timeout)
        if not response.ok:
            raise PacUnavailable(f"the PAC's storage answered HTTP {response.status_code}")
        return response.content


class _Finkok(Finkok):
    def __init__(
        self,
        credentials: PacCredentials,
        environment: Environment,
        base_url: str | None,
        timeout: float,
    ):
        super().__init__(
            username=credentials.user, password=credentials.password, environment=environment
        )
        self._base_url = base_url
        self._timeout = timeout

    @property
    def host(self) -> str:
        return (self._base_url or super().host).rstrip("/")

    def _perform_request(self, url: str, envelope: etree._Element) -> etree._Element:
        response = _send("post", url, self._timeout, data=etree.tostring(envelope))
        return etree.fromstring(response.content)


class _Diverza(Diverza):
    def __init__(
        self,
        credentials: PacCredentials,
        environment: Environment,
        base_url: str | None,
        timeout: float,
    ):
        super().__init__(
            rfc=credentials.issuer_rfc,
            id=credentials.client_id,
            token=credentials.token,
            environment=environment,
        )
        self._base_url = base_url
        self._timeout = timeout

    def _request(self, path: str, json: Any, method: str = "post") -> requests.Response:
        default = (
            "https://servicios.diverza.com"
            if self.environment == Environment.PRODUCTION
            else "https://serviciosdemo.diverza.com"
        )
        response = _send(
            method,
            f"{(self._base_url or default).rstrip('/')}/{path}",
            self._timeout,
            headers={"User-Agent": satcfdi_version.__user_agent__},
            json=self.payload_append | json,
        )
        if not response.ok:
            raise ResponseError(response)
        return response


class _Prodigia(Prodigia):
    def __init__(
        self,
        credentials: PacCredentials,
        environment: Environment,
        base_url: str | None,
        timeout: float,
    ):
        super().__init__(
            user=credentials.user,
            password=credentials.password,
            contrato=credentials.contract,
            environment=environment,
        )
        self._base_url = base_url
        self._timeout = timeout

    def _request(
        self, path: str, data: Any, method: str = "post", opciones: Any = None
    ) -> requests.Response:
        params = [
            ("contrato", self.contrato),
            ("opciones", "RESPUESTA_JSON"),
            ("opciones", "REGRESAR_CON_ERROR_307_XML"),
        ]
        params += [("opciones", o) for o in opciones or ()]
        response = _send(
            method,
            f"{(self._base_url or 'https://timbrado.pade.mx/servicio/rest').rstrip('/')}/{path}",
            self._timeout,
            headers={
                "User-Agent": satcfdi_version.__user_agent__,
                "Content-Type": "application/xml",
            },
            data=data,
            auth=self.auth,
            params=params,
        )
        if not response.ok:
            raise ResponseError(response)
        return response


def _response_error_text(exc: ResponseError) -> str:
    detail = exc.response
    if isinstance(detail, requests.Response):
        return detail.text[:500]
    return str(detail)[:500]


class PacGateway:
    """``stamp`` a sealed CFDI under a caller-chosen ``reference`` (stable across retries: use
    the invoice id), ``recover`` a stamped CFDI by UUID."""

    def __init__(
        self,
        provider: Provider | str,
        environment: str,
        *,
        credentials: PacCredentials,
        timeout: float,
        base_url: str | None = None,
        api_url: str | None = None,
    ):
        self.provider = Provider(provider)
        env = Environment[environment.upper()]
        match self.provider:
            case Provider.SW:
                self._client: Any = _SW(credentials, env, base_url, api_url or base_url, timeout)
            case Provider.FINKOK:
                self._client = _Finkok(credentials, env, base_url, timeout)
            case Provider.DIVERZA:
                self._client = _Diverza(credentials, env, base_url, timeout)
            case Provider.PRODIGIA:
                self._client = _Prodigia(credentials, env, base_url, timeout)

    def stamp(self, signed_xml: bytes, *, reference: str) -> StampResult:
        """Stamp, or get back the stamp the PAC already issued for this XML/reference."""
        document = _SignedDocument.of(signed_xml)
        bound = log.bind(provider=str(self.provider), reference=reference)
        try:
            result = self._stamp(document, reference)
        except PacError as exc:
            bound.warning("pac.stamp_failed", error=type(exc).__name__, detail=str(exc))
            raise
        bound.info("pac.stamped", uuid=result.uuid, recovered=result.recovered)
        return result

    def _stamp(self, document: _SignedDocument, reference: str) -> StampResult:
        client = self._client
        try:
            if isinstance(client, _SW | _Diverza):
                issued = client.stamp(document, ref_id=reference)
            else:
                issued = client.stamp(document)
        except _AlreadyStamped as duplicate:
            return self._recover_duplicate(duplicate)
        except ResponseError as exc:
            message = _response_error_text(exc)
            code = _code_of(message, "PAC")
            if code in DUPLICATE_CODES and isinstance(client, _Finkok):
                return self._finkok_stamped(document)
            raise PacRejected(code, message) from exc
        return parse_stamp(issued.xml, recovered=False)

    def _recover_duplicate(self, duplicate: _AlreadyStamped) -> StampResult:
        if cfdi := duplicate.data.get("cfdi"):
            return parse_stamp(cfdi.encode(), recovered=True)
        tfd = duplicate.data.get("tfd")
        if not tfd:
            raise PacUnavailable(f"PAC reported {duplicate.code} without the previous stamp")
        return self.recover(etree.fromstring(tfd.encode()).attrib["UUID"], recovered=True)

    def _finkok_stamped(self, document: _SignedDocument) -> StampResult:
        try:
            issued = self._client.stamped(document)
        except ResponseError as exc:
            message = _response_error_text(exc)
            raise PacRejected(_code_of(message, "PAC"), message) from exc
        return parse_stamp(issued.xml, recovered=True)

    def recover(self, uuid: str, *, recovered: bool = True) -> StampResult:
        """The stamped XML for ``uuid`` from the PAC's storage (SW only: satcfdi's other
        clients cannot fetch by UUID)."""
        if not isinstance(self._client, _SW):
            raise NotImplementedError(f"{self.provider} cannot recover a CFDI by UUID")
        uuid = str(uuid_module.UUID(uuid))
        records = self._client.recover(uuid)["data"].get("records") or []
        url = next((r.get("urlXml") for r in records if r.get("urlXml")), None)
        if url is None:
            raise PacUnavailable(f"the PAC's storage has no XML for {uuid} yet")
        return parse_stamp(self._client.download(url), recovered=recovered)


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def pac_gateway(settings: Settings) -> PacGateway:
    """The gateway the PAC settings describe."""
    return PacGateway(
        settings.pac_provider,
        settings.pac_environment,
        credentials=PacCredentials(
            user=settings.pac_user,
            password=_reveal(settings.pac_password),
            token=_reveal(settings.pac_token),
            contract=settings.pac_contract,
            client_id=settings.pac_client_id,
            issuer_rfc=settings.cfdi_issuer_rfc,
        ),
        timeout=settings.pac_timeout_seconds,
        base_url=settings.pac_base_url,
        api_url=settings.pac_api_url,
    )


# One gateway per process (Resources.shared), so SW's session token is reused between calls.
PAC_GATEWAY: SharedClient[PacGateway] = SharedClient("pac-gateway", pac_gateway)
