"""BCV official rates: fetch the bcv.org.ve home page and read its rate block.

The fetch and the parse are separate so the parser can be pinned against
recorded pages and the fetch against local stand-ins. bcv.org.ve serves a
certificate issued by "Sectigo Public Server Authentication CA DV R36" but
does not send that intermediate, so verification uses a shipped CA bundle
(certs/bcv-ca.pem) that supplies it: the chain is still checked end to end,
nothing is ever sent unverified.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import aiohttp
import structlog
from selectolax.lexbor import LexborHTMLParser, LexborNode

from colmena.domain.rates import RateSourceError
from colmena.gateways.retry import DEFAULT_MAX_BACKOFF_S, retryable_http, with_retries

log = structlog.get_logger(__name__)

DEFAULT_CA_BUNDLE = Path(__file__).parent / "certs" / "bcv-ca.pem"
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
RATE_BLOCK = ".view-tipo-de-cambio-oficial-del-bcv"
# Element id on the page -> ISO 4217 code.
CURRENCY_IDS: dict[str, str] = {
    "dolar": "USD",
    "euro": "EUR",
    "yuan": "CNY",
    "lira": "TRY",
    "rublo": "RUB",
}
_VES_NUMBER = re.compile(r"^(?:\d{1,3}(?:\.\d{3})+|\d+),\d+$")


class BcvError(RateSourceError):
    """Root of every BCV refusal; `outcome` is the metrics label. Permanent, as every
    RateSourceError, unless it says not: only a timeout, a dropped connection, a 429 or a 5xx
    may heal by retrying."""


class BcvParseError(BcvError):
    outcome = "parse_error"


class MissingRateError(BcvParseError):
    """The page has no USD rate: the layout changed or the block is empty."""


class UnparsableNumberError(BcvParseError):
    """A rate is present but is not a positive comma-decimal number."""


class MissingDateError(BcvParseError):
    """The rate row carries no machine-readable value date."""


class BcvHttpError(BcvError):
    """A status other than 200: retryable when it is 429 or 5xx."""

    outcome = "http_error"

    def __init__(self, status: int) -> None:
        super().__init__(f"BCV answered HTTP {status}")
        self.status = status
        self.retryable = retryable_http(status)


class BcvTimeoutError(BcvError):
    outcome = "timeout"
    retryable = True


class BcvTlsError(BcvError):
    """Certificate verification failed: wrong or outdated CA bundle, or an impostor."""

    outcome = "tls_error"


class BcvConnectionError(BcvError):
    outcome = "connection_error"
    retryable = True


@dataclass(frozen=True, slots=True)
class BcvRates:
    """What one page says: VES per unit of each currency, keyed by pair
    ("USD/VES"), valid from `effective_date` (often the next business day)."""

    effective_date: date
    rates: dict[str, Decimal]


def parse_ves_number(text: str) -> Decimal:
    """'1.012,45610000' -> Decimal('1012.45610000'), keeping every decimal.

    Only the BCV's own format is accepted (comma decimal, dot or space
    thousands): a bare '794.99' is ambiguous and refused rather than guessed.
    """
    compact = "".join(text.split())
    if not _VES_NUMBER.match(compact):
        raise UnparsableNumberError(f"not a BCV number: {text.strip()!r}")
    value = Decimal(compact.replace(".", "").replace(",", "."))
    if value <= 0:
        raise UnparsableNumberError(f"non-positive rate: {text.strip()!r}")
    return value


def _rate_row(tree: LexborHTMLParser) -> LexborNode:
    block = tree.css_first(RATE_BLOCK)
    if block is None:
        raise MissingRateError("no official exchange-rate block on the page")
    for row in block.css(".views-row"):
        if row.css_first("#dolar") is not None:
            return row
    raise MissingRateError("no #dolar inside the official exchange-rate block")


def _value_date(row: LexborNode) -> date:
    span = row.css_first("span.date-display-single")
    content = span.attributes.get("content") if span is not None else None
    if not content:
        raise MissingDateError("no span.date-display-single[content] in the rate row")
    try:
        return datetime.fromisoformat(content.strip()).date()
    except ValueError as exc:
        raise MissingDateError(f"unreadable value date: {content!r}") from exc


def parse_bcv_page(html: str) -> BcvRates:
    """Read the rates and their value date from the BCV home page.

    Everything comes from the one views-row that holds #dolar: the page has
    other date spans (news, other views) that must never be taken for the
    value date. USD is mandatory; any other currency present must parse too,
    since a half-readable block means the layout moved under us.
    """
    row = _rate_row(LexborHTMLParser(html))
    rates: dict[str, Decimal] = {}
    for element_id, code in CURRENCY_IDS.items():
        container = row.css_first(f"#{element_id}")
        if container is None:
            continue
        strong = container.css_first("strong")
        if strong is None:
            if code == "USD":
                raise MissingRateError("#dolar has no <strong> value")
            raise UnparsableNumberError(f"#{element_id} has no <strong> value")
        rates[f"{code}/VES"] = parse_ves_number(strong.text())
    if "USD/VES" not in rates:
        raise MissingRateError("no USD rate")
    return BcvRates(effective_date=_value_date(row), rates=rates)


def build_ssl_context(ca_bundle: str | Path) -> ssl.SSLContext:
    """A verifying client context that trusts exactly the given bundle
    (hostname checked, CERT_REQUIRED); there is no switch to turn it off."""
    return ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH, cafile=str(ca_bundle))


async def _get_once(session: aiohttp.ClientSession, url: str, ssl_context: ssl.SSLContext) -> str:
    try:
        async with session.get(url, ssl=ssl_context) as response:
            if response.status != 200:
                raise BcvHttpError(response.status)
            return await response.text()
    except aiohttp.ClientSSLError as exc:
        raise BcvTlsError(f"TLS verification failed: {exc}") from exc
    except TimeoutError as exc:
        raise BcvTimeoutError("BCV did not answer in time") from exc
    except aiohttp.ClientError as exc:
        raise BcvConnectionError(f"cannot reach BCV: {type(exc).__name__}") from exc


async def fetch_bcv_page(
    url: str,
    *,
    ca_bundle: str | Path = DEFAULT_CA_BUNDLE,
    timeout: float = 30.0,
    attempts: int = 3,
    backoff: float = 1.0,
    max_backoff: float = DEFAULT_MAX_BACKOFF_S,
    user_agent: str = USER_AGENT,
) -> str:
    """GET the page, retrying timeouts, connection errors, 429 and 5xx with jittered
    exponential backoff (colmena.gateways.retry). TLS and other 4xx failures are raised at
    once: retrying cannot fix them."""
    ssl_context = build_ssl_context(ca_bundle)
    headers = {
        "User-Agent": user_agent,
        "Accept": "text/html,application/xhtml+xml",
        "Accept-Language": "es-VE,es",
    }
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout), headers=headers
    ) as session:
        return await with_retries(
            lambda: _get_once(session, url, ssl_context),
            attempts=attempts,
            backoff=backoff,
            max_backoff=max_backoff,
            event="bcv_fetch_retry",
        )


async def scrape_bcv(
    url: str,
    *,
    ca_bundle: str | Path = DEFAULT_CA_BUNDLE,
    timeout: float = 30.0,
    attempts: int = 3,
    backoff: float = 1.0,
    max_backoff: float = DEFAULT_MAX_BACKOFF_S,
) -> BcvRates:
    """Fetch and parse in one call: what a scrape needs."""
    html = await fetch_bcv_page(
        url,
        ca_bundle=ca_bundle,
        timeout=timeout,
        attempts=attempts,
        backoff=backoff,
        max_backoff=max_backoff,
    )
    rates = parse_bcv_page(html)
    log.info(
        "bcv_scraped", effective_date=rates.effective_date.isoformat(), pairs=sorted(rates.rates)
    )
    return rates
