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

SW Sapien (tests/standins/pac.py and `colmena dev`'s PAC sandbox, colmena/sandbox/pac.py, speak
its REST format) and Finkok (tests/standins/finkok.py speaks its SOAP services) are exercised
end to end. Finkok has no customid: a repeat of the same sealed XML answers 307, and the stamp
is fetched with its ``stamped`` operation. Diverza and Prodigia get the same timeout, base URL
and error typing, untested.

Which failures may have stamped: a read timeout, a connection lost after sending and an HTTP
504 (a proxy that gave up waiting) are ``PacAmbiguous``; a refused connection, a connect
timeout and the other 5xx are ``PacUnavailable`` (nothing was stamped), the only ones after
which an invoice may move to the failover PAC.

Calls block (``requests``): run them in a thread from async code.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid as uuid_module
from collections.abc import Iterator
from contextlib import contextmanager
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
from satcfdi.create.cancela import cancelacion
from satcfdi.exceptions import ResponseError
from satcfdi.models import Signer
from satcfdi.pacs import CancelReason, Environment
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
FINKOK_NOT_YET_STORED = "603"
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
class CancelFiled:
    """The PAC filed a cancellation with the SAT: its EstatusUUID (201 filed, 202 cancelled
    before) and the SAT's acknowledgment. Whether the CFDI is cancelled is the SAT status
    service's to say (`colmena.gateways.sat_status`)."""

    code: str
    acuse: bytes | None


# EstatusUUID answers of the SAT's cancellation service that mean the request stands: 201
# filed now, 202 the folio was cancelled before (our own earlier request, repeated).
FILED_CODES = frozenset({"201", "202"})


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
        raise PacAmbiguous("the PAC returned a CFDI without TimbreFiscalDigital")
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
    except requests.ConnectTimeout as exc:  # no connection, so nothing was sent
        raise PacUnavailable(f"cannot connect to the PAC within {timeout}s") from exc
    except requests.Timeout as exc:
        raise PacTimeout(f"no answer from the PAC within {timeout}s") from exc
    except requests.ConnectionError as exc:
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        if isinstance(reason, NewConnectionError):
            raise PacUnavailable("cannot connect to the PAC") from exc
        raise PacAmbiguous("connection to the PAC lost before its answer") from exc
    if response.status_code == 504:  # a proxy gave up waiting: the PAC behind it may have stamped
        raise PacAmbiguous("PAC answered HTTP 504 (gateway timeout)")
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
        response = _send(
            "post",
            url,
            self._timeout,
            data=etree.tostring(envelope),
            headers={"Content-Type": "text/xml; charset=utf-8"},
        )
        try:
            return etree.fromstring(response.content)
        except etree.XMLSyntaxError:
            raise PacRejected(
                str(response.status_code), f"non-SOAP answer, HTTP {response.status_code}"
            ) from None


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


@contextmanager
def _stamp_exists() -> Iterator[None]:
    """Around fetching the stamp a PAC's duplicate answer (307) refers to: the PAC holds one, so
    failing to fetch it is never "not stamped" (which would let the invoice move to another
    PAC), only "ask again"."""
    try:
        yield
    except PacUnavailable as exc:
        raise PacAmbiguous(
            f"the PAC holds this document's stamp but did not return it: {exc}"
        ) from exc


def _response_error_text(exc: ResponseError) -> str:
    detail = exc.response
    if isinstance(detail, requests.Response):
        return detail.text[:500]
    return str(detail)[:500]


class PacGateway:
    """``stamp`` a sealed CFDI under a caller-chosen ``reference`` (stable across retries: use
    the invoice id), ``recover`` a stamped CFDI by UUID. ``failover`` is the second PAC, if
    one is configured: the caller decides when an invoice may go there, since only it knows
    whether the first may already hold a stamp."""

    def __init__(
        self,
        provider: Provider | str,
        environment: str,
        *,
        credentials: PacCredentials,
        timeout: float,
        base_url: str | None = None,
        api_url: str | None = None,
        failover: PacGateway | None = None,
    ):
        self.provider = Provider(provider)
        if failover is not None and failover.provider == self.provider:
            raise ValueError(f"the failover PAC must differ from the first ({self.provider})")
        self.failover = failover
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

    def at(self, provider: str) -> PacGateway:
        """This gateway or its failover, whichever is ``provider`` (where an invoice was
        stamped, or may have been: ``invoices.pac_provider``)."""
        if provider == self.provider:
            return self
        if self.failover is not None and provider == self.failover.provider:
            return self.failover
        # It may hold the invoice's stamp, so no other PAC may be asked instead.
        raise PacUnavailable(
            f"the invoice is (or may be) stamped at {provider}, which is no longer configured: "
            "configure it again (COLMENA_PAC_PROVIDER or COLMENA_PAC_FAILOVER_PROVIDER)"
        )

    def other_than(self, provider: str) -> str | None:
        """The configured PAC that is not ``provider``, if there is one."""
        if self.failover is None:
            return None
        return str(self.failover.provider if provider == self.provider else self.provider)

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
            with _stamp_exists():
                return self._recover_duplicate(duplicate)
        except ResponseError as exc:
            message = _response_error_text(exc)
            code = _code_of(message, "PAC")
            if code in DUPLICATE_CODES and isinstance(client, _Finkok):
                with _stamp_exists():
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
        """The stamp Finkok's 307 refers to. Its ``stamped`` lags the stamp by seconds and
        answers 603 "no contiene un timbre previo" meanwhile, so 603 after a 307 means "ask
        again", never "not stamped" (phpcfdi/finkok docs/issues/StampServiceDobleEstampado.md)."""
        try:
            issued = self._client.stamped(document)
        except ResponseError as exc:
            message = _response_error_text(exc)
            code = _code_of(message, "PAC")
            if code == FINKOK_NOT_YET_STORED:
                raise PacAmbiguous(f"Finkok reported 307, cannot return it yet: {message}") from exc
            raise PacRejected(code, message) from exc
        return parse_stamp(issued.xml, recovered=True)

    def cancel(
        self, stamped_xml: bytes, *, motive: str, replacement_uuid: str | None, signer: Signer
    ) -> CancelFiled:
        """Ask the PAC to cancel a stamped CFDI, in the SAT's signed ``Cancelacion`` (the CSD
        signs it, XML-DSig enveloped, as the SAT's cancellation service requires).

        Safe to repeat: a request already filed answers 202. ``PacRejected`` when the PAC or
        the SAT refuses it (203 not the issuer's, 205 unknown UUID, 208 bad replacement...).
        """
        document = CFDI.from_string(stamped_xml)
        uuid = document["Complemento"]["TimbreFiscalDigital"]["UUID"].upper()
        bound = log.bind(provider=str(self.provider), uuid=uuid, motive=motive)
        try:
            filed = self._cancel(document, uuid, motive, replacement_uuid, signer)
        except PacError as exc:
            bound.warning("pac.cancel_failed", error=type(exc).__name__, detail=str(exc))
            raise
        bound.info("pac.cancel_filed", code=filed.code)
        return filed

    def _cancel(
        self,
        document: CFDI,
        uuid: str,
        motive: str,
        replacement_uuid: str | None,
        signer: Signer,
    ) -> CancelFiled:
        client = self._client
        try:
            if isinstance(client, _SW | _Finkok):
                request = cancelacion.Cancelacion(
                    emisor=signer,
                    folios=cancelacion.Folio(uuid, motive, replacement_uuid),
                    fecha=dt.datetime.now(MEXICO_CITY).replace(tzinfo=None, microsecond=0),
                )
                answer = client.cancel_comprobante(request)
            else:
                answer = client.cancel(document, CancelReason(motive), replacement_uuid, signer)
        except ResponseError as exc:
            message = _response_error_text(exc)
            raise PacRejected(_code_of(message, "PAC"), message) from exc
        code = answer.code
        if isinstance(code, dict):  # SW: {"<UUID>": "<EstatusUUID>"}
            code = next((v for k, v in code.items() if k.upper() == uuid), None)
        code = str(code or "").strip()
        if code not in FILED_CODES:
            raise PacRejected(
                code or "PAC", f"cancellation of {uuid} not filed (EstatusUUID {code})"
            )
        acuse = answer.acuse.encode() if isinstance(answer.acuse, str) else answer.acuse
        return CancelFiled(code=code, acuse=acuse)

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
    """The gateway the PAC settings describe, with the failover PAC's when one is set."""
    failover = None
    if settings.pac_failover_provider is not None:
        failover = _configured(settings, settings.pac_failover_provider, "pac_failover_")
    return _configured(settings, settings.pac_provider, "pac_", failover=failover)


def _configured(
    settings: Settings, provider: str, prefix: str, *, failover: PacGateway | None = None
) -> PacGateway:
    """One PAC's gateway from its ``<prefix>*`` settings (``pac_`` or ``pac_failover_``); the
    environment and timeout are shared."""

    def setting(name: str) -> Any:
        return getattr(settings, prefix + name)

    return PacGateway(
        provider,
        settings.pac_environment,
        credentials=PacCredentials(
            user=setting("user"),
            password=_reveal(setting("password")),
            token=_reveal(setting("token")),
            contract=setting("contract"),
            client_id=setting("client_id"),
            issuer_rfc=settings.cfdi_issuer_rfc,
        ),
        timeout=settings.pac_timeout_seconds,
        base_url=setting("base_url"),
        api_url=setting("api_url"),
        failover=failover,
    )


# One gateway per process (Resources.shared), so SW's session token is reused between calls.
PAC_GATEWAY: SharedClient[PacGateway] = SharedClient("pac-gateway", pac_gateway)
