"""Rate sandboxes: a recorded BCV home page and recorded Binance P2P adverts, served by dev.

- BCV, under /sandbox/bcv: `GET /` answers the recorded page (colmena/sandbox/recorded/bcv.html,
  the shape of bcv.org.ve's rate block). Its value date is rewritten to the day of the request
  (America/Caracas), so the sanity gate, which refuses a BCV date more than 10 days old, keeps
  accepting it on every day a developer tries it.
- Binance, under /sandbox/binance: `POST /bapi/c2c/v2/friendly/c2c/adv/search`, the public
  endpoint's path and envelope. The request's `tradeType` picks the recorded side (BUY: makers
  selling USDT; SELL: makers buying), `payTypes` filters by payment method, `page`/`rows` page
  it; an unexpected asset, fiat or trade type gets Binance's `000002` "illegal parameter".

The values are recorded sample data, not today's rates: a scrape of these sandboxes is stored
marked as sandbox data (colmena.gateways.rate_sources.with_sandboxes).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from typing import Any

from aiohttp import web

from colmena.domain.rate_schedule import CARACAS
from colmena.gateways.binance import ASSET, FIAT, MAX_ROWS, SUCCESS_CODE
from colmena.gateways.rate_sources import BINANCE_SEARCH_PATH

RECORDED = resources.files("colmena.sandbox") / "recorded"
# The value date the recorded page carries, as the page writes it: machine-readable and in words.
RECORDED_VALUE_DATE = 'content="2026-08-31T00:00:00-04:00">Lunes, 31 Agosto  2026<'
DAYS = ("Lunes", "Martes", "Miércoles", "Jueves", "Viernes", "Sábado", "Domingo")
MONTHS = (
    "Enero",
    "Febrero",
    "Marzo",
    "Abril",
    "Mayo",
    "Junio",
    "Julio",
    "Agosto",
    "Septiembre",
    "Octubre",
    "Noviembre",
    "Diciembre",
)
BOOK_FILES = {"BUY": "binance_buy.json", "SELL": "binance_sell.json"}

BOOKS = web.AppKey("binance_sandbox_books", dict[str, list[dict[str, Any]]])


def _caracas_today() -> date:
    return datetime.now(CARACAS).date()


def value_date_markup(day: date) -> str:
    """The recorded page's value-date span contents, for `day`."""
    words = f"{DAYS[day.weekday()]}, {day.day} {MONTHS[day.month - 1]}  {day.year}"
    return f'content="{day.isoformat()}T00:00:00-04:00">{words}<'


@dataclass(frozen=True)
class RecordedPage:
    """The recorded BCV page and the clock that dates it."""

    html: str
    today: Callable[[], date]

    def served(self) -> str:
        return self.html.replace(RECORDED_VALUE_DATE, value_date_markup(self.today()))


PAGE = web.AppKey("bcv_sandbox_page", RecordedPage)


async def bcv_home(request: web.Request) -> web.Response:
    return web.Response(text=request.app[PAGE].served(), content_type="text/html", charset="utf-8")


def bcv_app(*, today: Callable[[], date] = _caracas_today) -> web.Application:
    """The BCV sub-app; `today` (a Caracas date) lets a test pin the value date."""
    html = (RECORDED / "bcv.html").read_text(encoding="utf-8")
    if RECORDED_VALUE_DATE not in html:
        raise RuntimeError("the recorded BCV page lost its value date")
    app = web.Application()
    app[PAGE] = RecordedPage(html, today)
    app.router.add_get("/", bcv_home)
    return app


def _answer(data: list[dict[str, Any]] | None, total: int = 0) -> web.Response:
    if data is None:
        body: dict[str, Any] = {
            "code": "000002",
            "message": "illegal parameter",
            "messageDetail": None,
            "data": None,
            "success": False,
        }
    else:
        body = {
            "code": SUCCESS_CODE,
            "message": None,
            "messageDetail": None,
            "data": data,
            "total": total,
            "success": True,
        }
    return web.json_response(body)


def _page(value: Any, default: int) -> int | None:
    if value is None:
        return default
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def adv_search(request: web.Request) -> web.Response:
    try:
        query = await request.json()
    except ValueError:
        return _answer(None)
    if not isinstance(query, dict) or query.get("asset") != ASSET or query.get("fiat") != FIAT:
        return _answer(None)
    book = request.app[BOOKS].get(str(query.get("tradeType")))
    page, rows = _page(query.get("page"), 1), _page(query.get("rows"), 10)
    pay_types = query.get("payTypes") or []
    if book is None or page is None or rows is None or not isinstance(pay_types, list):
        return _answer(None)
    if page < 1 or not 1 <= rows <= MAX_ROWS:
        return _answer(None)
    adverts = [
        item
        for item in book
        if not pay_types
        or {method.get("identifier") for method in item["adv"]["tradeMethods"]} & set(pay_types)
    ]
    return _answer(adverts[(page - 1) * rows : page * rows], total=len(adverts))


def binance_app() -> web.Application:
    """The Binance sub-app, at the real endpoint's path."""
    app = web.Application()
    app[BOOKS] = {
        side: json.loads((RECORDED / name).read_text(encoding="utf-8"))["data"]
        for side, name in BOOK_FILES.items()
    }
    app.router.add_post(BINANCE_SEARCH_PATH, adv_search)
    return app
