"""Public, read-only exchange rates: the latest values, their history, and conversions.

Only published values ('accepted' or 'confirmed') are ever read here (colmena.store.rates'
published queries). Answers come from a small in-process cache of a few seconds
(COLMENA_RATES_API_CACHE_S): rates change twice a day (BCV) or every 30 minutes (Binance), so
a burst of clients costs one query, while ages are still computed at answer time.

Every query parameter is validated; anything unexpected is a 400 JSON error that names it.
A value scraped from `colmena dev`'s recorded sandbox carries `"sandbox": true`.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, Inexact, localcontext
from typing import Any

from aiohttp import web

from colmena.config.metrics import RATE, RATE_AGE, RATE_SOURCE_STALE
from colmena.http.context import RESOURCES, SETTINGS
from colmena.http.errors import ApiError
from colmena.http.health import GAUGE_REFRESHERS
from colmena.http.payloads import bad_parameter, query_params
from colmena.store import rates as store
from colmena.store.rates import RateRow, SourceHealth

HISTORY_DEFAULT_LIMIT = 100
HISTORY_MAX_LIMIT = 500
CACHE_MAX_ENTRIES = 512
VES = "VES"
HOME_SOURCE = {"USDT": "binance"}  # every other currency: the BCV official rate
RESULT_QUANTUM = Decimal("1e-8")  # the BCV's own precision, for divisions that do not terminate
_CURRENCY = re.compile(r"^[A-Z]{3,5}$")
_PAIR = re.compile(r"^[A-Z]{3,5}/[A-Z]{3,5}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_AMOUNT = re.compile(r"^\d{1,15}(\.\d{1,8})?$")
_CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,24}$")


class TtlCache:
    """A few seconds of memory for read-only answers; bounded, oldest entries evicted first.

    `clock` (seconds, monotonic) is a parameter so a test can step past the TTL instead of
    waiting for it.
    """

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = CACHE_MAX_ENTRIES,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    async def get(self, key: Any, load: Callable[[], Awaitable[Any]]) -> Any:
        now = self._clock()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await load()
        if self.ttl_s > 0:
            self._entries[key] = (now + self.ttl_s, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value


CACHE = web.AppKey("rates_cache", TtlCache)


@dataclass(frozen=True, slots=True)
class Snapshot:
    rates: list[RateRow]
    health: dict[str, SourceHealth]

    def find(self, source: str, pair: str) -> RateRow | None:
        return next((row for row in self.rates if row.source == source and row.pair == pair), None)


# --- parameters ----------------------------------------------------------------------------------


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "").strip()
    if not value:
        raise bad_parameter(name, f"parameter {name!r} is required")
    return value


def _source(params: Mapping[str, str]) -> str | None:
    value = params.get("source")
    if value is None:
        return None
    if value not in store.SOURCES:
        raise bad_parameter("source", f"source must be one of {', '.join(store.SOURCES)}")
    return value


def _pair(value: str) -> str:
    pair = value.strip().upper()
    if not _PAIR.match(pair):
        raise bad_parameter("pair", "pair must look like USD/VES")
    return pair


def _currency(name: str, value: str) -> str:
    code = value.strip().upper()
    if not _CURRENCY.match(code):
        raise bad_parameter(name, f"{name} must be a currency code such as USD or VES")
    return code


def _date(params: Mapping[str, str], name: str) -> date | None:
    value = params.get(name)
    if value is None:
        return None
    try:
        if not _DATE.match(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise bad_parameter(name, f"{name} must be a date, YYYY-MM-DD") from None


def _limit(params: Mapping[str, str]) -> int:
    value = params.get("limit")
    if value is None:
        return HISTORY_DEFAULT_LIMIT
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= HISTORY_MAX_LIMIT:
        raise bad_parameter("limit", f"limit must be an integer from 1 to {HISTORY_MAX_LIMIT}")
    return int(value)


def encode_cursor(rate_id: int) -> str:
    return base64.urlsafe_b64encode(str(rate_id).encode()).decode().rstrip("=")


def _cursor(params: Mapping[str, str]) -> int | None:
    value = params.get("cursor")
    if value is None:
        return None
    try:
        if not _CURSOR.fullmatch(value):  # `$` alone would let a trailing newline through
            raise ValueError(value)
        decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
        if not decoded.isdigit() or int(decoded) < 1:
            raise ValueError(decoded)
        return int(decoded)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad_parameter("cursor", "cursor is not one this API returned") from None


def _amount(params: Mapping[str, str]) -> Decimal:
    value = _required(params, "amount")
    if not _AMOUNT.match(value):
        raise bad_parameter(
            "amount", "amount must be a plain non-negative decimal, up to 15 digits and 8 decimals"
        )
    return Decimal(value)


# --- rendering -----------------------------------------------------------------------------------


def plain(value: Decimal) -> str:
    """Fixed-point text, every stored decimal kept ('0E-8' would confuse any client)."""
    return f"{value:f}"


def _stale(snapshot: Snapshot, source: str) -> bool:
    health = snapshot.health.get(source)
    return bool(health and health.stale)


def _rate_json(row: RateRow, *, now: datetime, stale: bool | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row.id,
        "source": row.source,
        "pair": row.pair,
        "value": plain(row.value),
        "effective_date": row.effective_date.isoformat(),
        "fetched_at": row.fetched_at.isoformat(),
        "last_seen_at": row.last_seen_at.isoformat(),
        "status": row.status,
    }
    if row.buy is not None and row.sell is not None:
        body["buy"], body["sell"] = plain(row.buy), plain(row.sell)
    if row.sandbox:
        body["sandbox"] = True  # recorded sample data from `colmena dev`, never a real rate
    if stale is not None:
        body["age_seconds"] = max(0, int((now - row.last_seen_at).total_seconds()))
        body["stale"] = stale
    return body


def _json(request: web.Request, body: dict[str, Any]) -> web.Response:
    response = web.json_response(body)
    ttl = int(request.app[SETTINGS].rates_api_cache_s)
    response.headers["Cache-Control"] = f"public, max-age={ttl}" if ttl else "no-store"
    return response


# --- handlers ------------------------------------------------------------------------------------


async def load_snapshot(app: web.Application) -> Snapshot:
    async def load() -> Snapshot:
        async with app[RESOURCES].pool.acquire() as conn:
            rows = await store.latest_published_all(conn)
            health = {h.source: h for h in await store.sources(conn)}
        return Snapshot(rows, health)

    return await app[CACHE].get("latest", load)


async def latest(request: web.Request) -> web.Response:
    """Every pair's newest published value, with its age (since a scrape last saw it) and
    whether its source is stale (failed its last scrapes)."""
    query_params(request, set())
    snapshot = await load_snapshot(request.app)
    now = datetime.now(UTC)
    return _json(
        request,
        {
            "as_of": now.isoformat(),
            "rates": [
                _rate_json(row, now=now, stale=_stale(snapshot, row.source))
                for row in snapshot.rates
            ],
        },
    )


async def history(request: web.Request) -> web.Response:
    """Published values of one pair, newest first, a page at a time (`next_cursor`)."""
    params = query_params(request, {"pair", "source", "from", "to", "limit", "cursor"})
    pair = _pair(_required(params, "pair"))
    source = _source(params)
    start, end = _date(params, "from"), _date(params, "to")
    if start and end and start > end:
        raise bad_parameter("from", "from must not be after to")
    limit, before = _limit(params), _cursor(params)

    async def load() -> list[RateRow]:
        async with request.app[RESOURCES].pool.acquire() as conn:
            return await store.published_history(
                conn, pair=pair, source=source, start=start, end=end, before_id=before, limit=limit
            )

    rows = await request.app[CACHE].get(("history", pair, source, start, end, before, limit), load)
    now = datetime.now(UTC)
    return _json(
        request,
        {
            "pair": pair,
            "items": [_rate_json(row, now=now) for row in rows],
            "next_cursor": encode_cursor(rows[-1].id) if len(rows) == limit else None,
        },
    )


def convert_amount(
    amount: Decimal, from_rate: Decimal | None, to_rate: Decimal | None
) -> tuple[Decimal, bool]:
    """amount * from_rate / to_rate (None = VES itself), in Decimal; returns (result, exact).

    Multiplying is exact (60 digits of precision hold any product of the accepted inputs). A
    division's result has 8 decimals, rounded half-even, and is reported as not exact when the
    rounding changed it.
    """
    with localcontext() as ctx:
        ctx.prec = 60
        ctx.clear_flags()
        in_ves = amount * from_rate if from_rate is not None else amount
        if to_rate is None:
            return in_ves, not ctx.flags[Inexact]
        quotient = in_ves / to_rate
        rounded = quotient.quantize(RESULT_QUANTUM, rounding=ROUND_HALF_EVEN)
        return rounded, not ctx.flags[Inexact] and rounded == quotient


def _rate_for(snapshot: Snapshot, currency: str, source: str | None) -> RateRow | None:
    """The published VES rate of a currency (None for VES itself); 404 if there is none."""
    if currency == VES:
        return None
    chosen = source or HOME_SOURCE.get(currency, "bcv")
    row = snapshot.find(chosen, f"{currency}/{VES}")
    if row is None:
        raise ApiError(404, "rate_not_found", f"no published {chosen} rate for {currency}/{VES}")
    return row


async def convert(request: web.Request) -> web.Response:
    """Convert an amount between two currencies through their published VES rates."""
    params = query_params(request, {"amount", "from", "to", "source"})
    amount = _amount(params)
    source_currency = _currency("from", _required(params, "from"))
    target_currency = _currency("to", _required(params, "to"))
    if source_currency == target_currency:
        raise bad_parameter("to", "from and to are the same currency")
    source = _source(params)
    snapshot = await load_snapshot(request.app)
    from_row = _rate_for(snapshot, source_currency, source)
    to_row = _rate_for(snapshot, target_currency, source)
    result, exact = convert_amount(
        amount, from_row.value if from_row else None, to_row.value if to_row else None
    )
    now = datetime.now(UTC)
    used = [row for row in (from_row, to_row) if row is not None]
    return _json(
        request,
        {
            "amount": plain(amount),
            "from": source_currency,
            "to": target_currency,
            "result": plain(result),
            "exact": exact,
            "rates": [_rate_json(row, now=now, stale=_stale(snapshot, row.source)) for row in used],
        },
    )


# --- metrics -------------------------------------------------------------------------------------


async def refresh_rate_gauges(app: web.Application) -> None:
    """colmena_rate, colmena_rate_age_seconds and colmena_rate_source_stale, from the database
    (the workers that scrape are other processes; the ingress reads what they stored)."""
    async with app[RESOURCES].pool.acquire() as conn:
        rows = await store.latest_published_all(conn)
        health = await store.sources(conn)
    now = datetime.now(UTC)
    for row in rows:
        RATE.labels(source=row.source, pair=row.pair).set(float(row.value))
        RATE_AGE.labels(source=row.source, pair=row.pair).set(
            (now - row.last_seen_at).total_seconds()
        )
    for source in health:
        RATE_SOURCE_STALE.labels(source=source.source).set(1 if source.stale else 0)


def setup(app: web.Application) -> None:
    app[CACHE] = TtlCache(app[SETTINGS].rates_api_cache_s)
    app[GAUGE_REFRESHERS].append(refresh_rate_gauges)
    app.router.add_get("/api/v1/rates/latest", latest)
    app.router.add_get("/api/v1/rates/history", history)
    app.router.add_get("/api/v1/rates/convert", convert)
