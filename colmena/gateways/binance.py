"""Binance P2P USDT/VES order book: the public adv/search endpoint.

Sides are always the USER's (the taker's):

- Side.BUY: the user buys USDT and pays VES. The request carries
  tradeType "BUY"; Binance answers with adverts from makers who SELL USDT,
  so each advert's `adv.tradeType` is "SELL". Their prices are asks: the
  published *buy* rate.
- Side.SELL: the user sells USDT for VES. Request tradeType "SELL"; the
  adverts are makers who BUY USDT (`adv.tradeType` "BUY"). Bids: the *sell*
  rate.

An advert whose `adv.tradeType` is not the expected maker side is kept but
marked ineligible, so a mixed or mislabelled answer can never leak the other
side's prices into this side's rate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from functools import partial
from typing import Any

import aiohttp
import structlog

from colmena.domain.rates import RateSourceError
from colmena.gateways.retry import DEFAULT_MAX_BACKOFF_S, retryable_http, with_retries

log = structlog.get_logger(__name__)

DEFAULT_URL = "https://p2p.binance.com/bapi/c2c/v2/friendly/c2c/adv/search"
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
SUCCESS_CODE = "000000"
MAX_ROWS = 20
ASSET = "USDT"
FIAT = "VES"


class Side(StrEnum):
    """The user's side of the trade (see the module docstring)."""

    BUY = "buy"
    SELL = "sell"

    @property
    def request_trade_type(self) -> str:
        return self.value.upper()

    @property
    def maker_trade_type(self) -> str:
        """What `adv.tradeType` says on adverts answering this side."""
        return "SELL" if self is Side.BUY else "BUY"


class BinanceError(RateSourceError):
    """Root of every Binance refusal; `outcome` is the metrics label. Permanent, as every
    RateSourceError, unless it says not: only a timeout, a dropped connection, a 429 or a 5xx
    may heal by retrying."""


class BinanceApiCodeError(BinanceError):
    """HTTP 200 but the body's `code` is not "000000"."""

    outcome = "api_code"

    def __init__(self, code: object, message: object) -> None:
        super().__init__(f"Binance answered code {code!r}: {message!r}")
        self.code = code


class BinanceForbiddenError(BinanceError):
    """403: Binance's WAF or a geo-block. Retrying only deepens the ban."""

    outcome = "forbidden"


class BinanceHttpError(BinanceError):
    """A status other than 200 and 403: retryable when it is 429 or 5xx."""

    outcome = "http_error"

    def __init__(self, status: int) -> None:
        super().__init__(f"Binance answered HTTP {status}")
        self.status = status
        self.retryable = retryable_http(status)


class BinanceTimeoutError(BinanceError):
    outcome = "timeout"
    retryable = True


class BinanceConnectionError(BinanceError):
    outcome = "connection_error"
    retryable = True


class BinanceResponseError(BinanceError):
    """The body is not the JSON shape the search endpoint returns."""

    outcome = "parse_error"


@dataclass(frozen=True, slots=True)
class P2PAdvert:
    """One advert, reduced to what the representative rate needs (it
    satisfies colmena.domain.rates.Quote)."""

    adv_no: str
    price: Decimal
    volume: Decimal  # tradable USDT
    maker_trade_type: str
    promoted: bool
    eligible: bool


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool | float):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _advert(item: Mapping[str, Any], side: Side) -> P2PAdvert | None:
    adv = item.get("adv")
    if not isinstance(adv, Mapping):
        return None
    price = _decimal(adv.get("price"))
    volume = _decimal(adv.get("tradableQuantity"))
    if volume is None:
        volume = _decimal(adv.get("surplusAmount"))
    if price is None or volume is None:
        return None
    advertiser = item.get("advertiser")
    blocked = isinstance(advertiser, Mapping) and advertiser.get("isBlocked") is True
    maker = str(adv.get("tradeType") or "").upper()
    eligible = (
        maker == side.maker_trade_type
        and adv.get("isTradable") is not False
        and not blocked
        and adv.get("asset", ASSET) == ASSET
        and adv.get("fiatUnit", FIAT) == FIAT
        and price > 0
        and volume > 0
    )
    promoted = bool(item.get("privilegeDesc")) or item.get("privilegeType") not in (None, 0)
    return P2PAdvert(
        adv_no=str(adv.get("advNo", "")),
        price=price,
        volume=volume,
        maker_trade_type=maker,
        promoted=promoted,
        eligible=eligible,
    )


def parse_search_response(payload: Any, side: Side) -> list[P2PAdvert]:
    """Validate the envelope and turn `data` into adverts.

    A non-"000000" code is an error; `data: []` is a valid empty book. Rows
    without a readable price or volume are skipped (and counted in the log)
    rather than guessed at.
    """
    if not isinstance(payload, Mapping):
        raise BinanceResponseError("body is not a JSON object")
    if payload.get("code") != SUCCESS_CODE:
        raise BinanceApiCodeError(payload.get("code"), payload.get("message"))
    data = payload.get("data")
    if not isinstance(data, list):
        raise BinanceResponseError("`data` is not a list")
    adverts = [
        advert
        for item in data
        if isinstance(item, Mapping) and (advert := _advert(item, side)) is not None
    ]
    if len(adverts) != len(data):
        log.warning("binance_rows_skipped", side=side.value, skipped=len(data) - len(adverts))
    return adverts


def search_body(
    side: Side,
    *,
    page: int = 1,
    rows: int = MAX_ROWS,
    pay_types: Sequence[str] = (),
    publisher_type: str | None = None,
) -> dict[str, Any]:
    if not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"rows must be between 1 and {MAX_ROWS}")
    if page < 1:
        raise ValueError("page must be at least 1")
    return {
        "asset": ASSET,
        "fiat": FIAT,
        "tradeType": side.request_trade_type,
        "page": page,
        "rows": rows,
        "payTypes": list(pay_types),
        "publisherType": publisher_type,
    }


async def _post_once(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    try:
        async with session.post(url, json=body) as response:
            if response.status == 403:
                raise BinanceForbiddenError("Binance answered HTTP 403")
            if response.status != 200:
                raise BinanceHttpError(response.status)
            raw = await response.read()
    except TimeoutError as exc:
        raise BinanceTimeoutError("Binance did not answer in time") from exc
    except aiohttp.ClientError as exc:
        raise BinanceConnectionError(f"cannot reach Binance: {type(exc).__name__}") from exc
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BinanceResponseError("body is not JSON") from exc


async def fetch_p2p_book(
    url: str = DEFAULT_URL,
    *,
    pay_types: Sequence[str] = (),
    publisher_type: str | None = None,
    rows: int = MAX_ROWS,
    pages: int = 1,
    timeout: float = 30.0,
    attempts: int = 3,
    backoff: float = 1.0,
    max_backoff: float = DEFAULT_MAX_BACKOFF_S,
    user_agent: str = USER_AGENT,
) -> dict[Side, list[P2PAdvert]]:
    """Both sides of the USDT/VES book, `pages` pages of `rows` each (fewer
    when a page comes back short). Any failure on either side raises: half a
    book would publish a mid that nobody can trade at."""
    if pages < 1:
        raise ValueError("pages must be at least 1")
    headers = {
        "User-Agent": user_agent,
        "Accept": "application/json",
        "Content-Type": "application/json",
    }
    book: dict[Side, list[P2PAdvert]] = {}
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout), headers=headers
    ) as session:
        for side in Side:
            adverts: list[P2PAdvert] = []
            for page in range(1, pages + 1):
                body = search_body(
                    side, page=page, rows=rows, pay_types=pay_types, publisher_type=publisher_type
                )
                payload = await with_retries(
                    partial(_post_once, session, url, body),
                    attempts=attempts,
                    backoff=backoff,
                    max_backoff=max_backoff,
                    event="binance_fetch_retry",
                )
                adverts.extend(parse_search_response(payload, side))
                if len(payload["data"]) < rows:
                    break
            book[side] = adverts
    log.info("binance_fetched", **{side.value: len(adverts) for side, adverts in book.items()})
    return book
