"""Payments: a search by provider id, email or order (or colmena's id), newest first, and each
payment's timeline.

The timeline shows every provider event in the order it arrived, with its place in the
provider's own order beside it (a late event that changed nothing is visible as such), the
audit trail's record of every change, the license with its emails, the invoices (credit notes
and cancellations included) and the order, each linking to its page.
"""

from __future__ import annotations

from aiohttp import web

from colmena.domain.payment_state import Status
from colmena.http.console.core import HtmlError
from colmena.http.console.operator_common import (
    PAGE_SIZE,
    choice,
    connection,
    int_cursor,
    page_of,
    path_int,
    query_text,
    show,
)
from colmena.store import console_queries as queries

STATUSES = tuple(status.value for status in Status)


async def payments_list(request: web.Request) -> web.Response:
    text = query_text(request, "q")
    status = choice(request, "status", STATUSES)
    async with connection(request) as conn:
        rows = await queries.search_payments(
            conn,
            search=queries.PaymentSearch(text) if text is not None else None,
            status=status,
            before_id=int_cursor(request),
            limit=PAGE_SIZE,
        )
    return show(
        request,
        "payments.html",
        {
            "page": page_of(rows, lambda payment: payment.id),
            "q": text or "",
            "status": status or "",
            "statuses": STATUSES,
        },
    )


async def payment_page(request: web.Request) -> web.Response:
    payment_id = path_int(request, "payment_id", "No such payment")
    async with connection(request) as conn:
        found = await queries.timeline(conn, payment_id)
    if found is None:
        raise HtmlError(404, "No such payment")
    by_provider = sorted(found.events, key=lambda event: event.provider_rank)
    return show(request, "payment.html", {"t": found, "by_provider": by_provider})
