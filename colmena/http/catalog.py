"""Public, read-only catalog: live products with their live prices, for shop and sign-up pages.

Archived products and prices never show. Each price is its exact decimal string, its minor units
(what Stripe charges) and its currency's exponent, so a client never does money arithmetic.
Package directories stay private. Answers may be cached for a minute (Cache-Control): a price
change reaches buyers within that, and the checkout reads the live price itself anyway.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from colmena.domain.catalog import KINDS
from colmena.domain.money import exponent, to_minor
from colmena.http.context import RESOURCES
from colmena.http.payloads import bad_parameter, query_params
from colmena.store import catalog as store

CACHE_CONTROL = "public, max-age=60"
PARAMETERS = ("currency", "kind")
CURRENCY_CODE = re.compile(r"[A-Za-z]{3}")


def price_json(price: store.Price) -> dict[str, Any]:
    """A price as the catalog shows it (here and in `colmena catalog list --json`)."""
    return {
        "id": price.id,
        "edition": price.edition,
        "currency": price.currency,
        "amount": f"{price.amount:f}",
        "amount_minor": to_minor(price.amount, price.currency),
        "exponent": exponent(price.currency),
        "billing_period": price.billing_period,
    }


def _entry_json(entry: store.CatalogEntry) -> dict[str, Any]:
    product = entry.product
    body: dict[str, Any] = {"ref": product.ref, "kind": product.kind, "name": product.name}
    if product.kind == "license":
        body.update(editions=list(product.editions), max_seats=product.max_seats)
    else:
        body["plan"] = product.plan
    body["prices"] = [price_json(price) for price in entry.prices]
    return body


def _filters(request: web.Request) -> tuple[str | None, str | None]:
    """(currency, kind) from the query; anything unknown, repeated or invalid is a 400."""
    query = query_params(request, set(PARAMETERS))
    currency, kind = query.get("currency"), query.get("kind")
    if kind is not None and kind not in KINDS:
        raise bad_parameter("kind", f"kind must be one of {', '.join(KINDS)}")
    if currency is None:
        return None, kind
    # A filter, not an order: a well-formed code nobody prices in simply matches nothing.
    if CURRENCY_CODE.fullmatch(currency) is None:
        raise bad_parameter(
            "currency", "currency must be a three-letter ISO 4217 code, such as MXN"
        )
    return currency.upper(), kind


async def catalog(request: web.Request) -> web.Response:
    """Live products and their live prices; ?currency= keeps products priced in it, ?kind= one
    kind (license or plan)."""
    currency, kind = _filters(request)
    async with request.app[RESOURCES].pool.acquire() as conn:
        entries = await store.catalog(conn, currency=currency, kind=kind)
    response = web.json_response({"products": [_entry_json(entry) for entry in entries]})
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/catalog", catalog)
