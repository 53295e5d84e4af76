"""Rates: every kept value (suspects and rejections too), newest first, each source's health,
and accepting a suspect: `colmena rates accept`, in an audited transaction.

Accepting publishes a value the judge held back, and prices in bolívares follow it: it asks
for a confirmation first.
"""

from __future__ import annotations

from aiohttp import web

from colmena.domain.rates import AcceptRefused
from colmena.http.console.core import HtmlError, confirmation, form, see_other, translate
from colmena.http.console.operator_common import (
    ADMIN,
    PAGE_SIZE,
    audited,
    choice,
    connection,
    int_cursor,
    page_of,
    path_int,
    show,
)
from colmena.store import console_queries as queries
from colmena.store import rates as store
from colmena.store.rate_keeping import accept

SOURCES = ("bcv", "binance")
STATUSES = ("accepted", "confirmed", "suspect", "rejected")
RATES_PATH = f"{ADMIN}/rates"


async def rates_list(request: web.Request) -> web.Response:
    source = choice(request, "source", SOURCES)
    status = choice(request, "status", STATUSES)
    async with connection(request) as conn:
        rows = await queries.rate_history(
            conn, source=source, status=status, before_id=int_cursor(request), limit=PAGE_SIZE
        )
        health = await store.sources(conn)
    return show(
        request,
        "rates.html",
        {
            "page": page_of(rows, lambda row: row["id"]),
            "health": health,
            "source": source or "",
            "status": status or "",
            "sources": SOURCES,
            "statuses": STATUSES,
        },
    )


async def accept_rate(request: web.Request) -> web.Response:
    rate_id = path_int(request, "rate_id", "No such rate")
    posted = await form(request)
    asked = confirmation(
        request,
        posted,
        message="Publish this suspect rate? Prices in bolívares will follow it.",
        cancel_to=RATES_PATH,
    )
    if asked is not None:
        return asked
    try:
        async with audited(request) as conn:
            row, changed = await accept(conn, rate_id)
    except AcceptRefused as refused:
        raise HtmlError(409, str(refused)) from None
    notice = "Rate published" if changed else "That rate was already published"
    return see_other(
        request, f"{RATES_PATH}?source={row.source}", notice=translate(request, notice)
    )
