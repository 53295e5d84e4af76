"""Products and their prices (migration 0012): written by `colmena catalog`, read by the public
catalog and by checkouts.

Input arrives validated (`colmena.domain.catalog`); what this module adds is what only the
database can promise: one live price per product, edition and currency (a new price archives
the old one in the same transaction, under the product's row lock), and that an archived
product or price is never offered again. Archived rows stay for the orders that point at them.
Amounts come back at their currency's exponent (1500.00 MXN, 1500 CLP), not numeric(18,4)'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from colmena.domain.catalog import CatalogError, NewPrice, NewProduct
from colmena.domain.money import exponent


@dataclass(frozen=True)
class Product:
    ref: str
    kind: str
    name: str
    package_dir: str | None
    editions: tuple[str, ...]
    max_seats: int | None
    plan: str | None
    archived_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Price:
    id: int
    product_ref: str
    edition: str | None
    currency: str
    amount: Decimal
    billing_period: str | None
    archived_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class LivePrice:
    """What a checkout sells: a live product and its live price for one edition and currency."""

    product: Product
    price: Price


@dataclass(frozen=True)
class PriceChange:
    price: Price
    archived: Price | None  # the live price it replaced, archived in the same transaction


@dataclass(frozen=True)
class CatalogEntry:
    product: Product
    prices: tuple[Price, ...]


_PRODUCT_COLUMNS = (
    "ref", "kind", "name", "package_dir", "editions", "max_seats", "plan", "archived_at",
    "created_at",
)  # fmt: skip
_PRICE_COLUMNS = (
    "id", "product_ref", "edition", "currency", "amount", "billing_period", "archived_at",
    "created_at",
)  # fmt: skip
_PRODUCT = ", ".join(f"p.{name} AS product_{name}" for name in _PRODUCT_COLUMNS)
_PRICE = ", ".join(f"pr.{name} AS price_{name}" for name in _PRICE_COLUMNS)


def _product(row: asyncpg.Record) -> Product:
    values = {name: row[f"product_{name}"] for name in _PRODUCT_COLUMNS}
    return Product(**{**values, "editions": tuple(values["editions"])})


def _price(row: asyncpg.Record) -> Price:
    values = {name: row[f"price_{name}"] for name in _PRICE_COLUMNS}
    places = Decimal(1).scaleb(-exponent(values["currency"]))
    return Price(**{**values, "amount": values["amount"].quantize(places)})


async def add_product(conn: asyncpg.Connection, product: NewProduct) -> Product | None:
    """Insert the product; None if its ref is taken (live or archived: refs are never reused)."""
    try:
        row = await conn.fetchrow(
            f"""
            INSERT INTO products AS p (ref, kind, name, package_dir, editions, max_seats, plan)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (ref) DO NOTHING
            RETURNING {_PRODUCT}
            """,
            product.ref,
            product.kind,
            product.name,
            product.package_dir,
            list(product.editions),
            product.max_seats,
            product.plan,
        )
    except asyncpg.ForeignKeyViolationError:
        raise CatalogError("plan", f"no plan {product.plan!r} in the plans table") from None
    return _product(row) if row else None


async def get_product(conn: asyncpg.Connection, ref: str) -> Product | None:
    """The product, archived or not."""
    row = await conn.fetchrow(f"SELECT {_PRODUCT} FROM products p WHERE p.ref = $1", ref)
    return _product(row) if row else None


async def product_for_plan(conn: asyncpg.Connection, plan: str) -> Product | None:
    """The live plan product that grants `plan` (the oldest, should there be several)."""
    row = await conn.fetchrow(
        f"""
        SELECT {_PRODUCT} FROM products p
        WHERE p.kind = 'plan' AND p.plan = $1 AND p.archived_at IS NULL
        ORDER BY p.created_at, p.ref LIMIT 1
        """,
        plan,
    )
    return _product(row) if row else None


async def list_products(
    conn: asyncpg.Connection, *, kind: str | None = None, include_archived: bool = False
) -> list[Product]:
    rows = await conn.fetch(
        f"""
        SELECT {_PRODUCT} FROM products p
        WHERE ($1::text IS NULL OR p.kind = $1) AND ($2 OR p.archived_at IS NULL)
        ORDER BY p.kind, p.ref
        """,
        kind,
        include_archived,
    )
    return [_product(row) for row in rows]


async def list_prices(
    conn: asyncpg.Connection,
    *,
    product_ref: str | None = None,
    currency: str | None = None,
    include_archived: bool = False,
) -> list[Price]:
    """Prices, live ones first within each product, edition and currency."""
    rows = await conn.fetch(
        f"""
        SELECT {_PRICE} FROM prices pr
        WHERE ($1::text IS NULL OR pr.product_ref = $1) AND ($2::text IS NULL OR pr.currency = $2)
          AND ($3 OR pr.archived_at IS NULL)
        ORDER BY pr.product_ref, pr.edition NULLS FIRST, pr.currency,
                 pr.archived_at DESC NULLS FIRST, pr.id DESC
        """,
        product_ref,
        currency,
        include_archived,
    )
    return [_price(row) for row in rows]


async def catalog(
    conn: asyncpg.Connection, *, currency: str | None = None, kind: str | None = None
) -> list[CatalogEntry]:
    """Live products with their live prices. With `currency`, only products priced in it."""
    products = await list_products(conn, kind=kind)
    prices: dict[str, list[Price]] = {}
    for price in await list_prices(conn, currency=currency):
        prices.setdefault(price.product_ref, []).append(price)
    return [
        CatalogEntry(product, tuple(prices.get(product.ref, ())))
        for product in products
        if currency is None or product.ref in prices
    ]


async def set_price(conn: asyncpg.Connection, price: NewPrice) -> PriceChange | None:
    """Make `price` the live one for its product, edition and currency; None if the product is
    unknown or archived. The price it replaces is archived in the same transaction."""
    async with conn.transaction():
        live = await conn.fetchval(
            "SELECT true FROM products WHERE ref = $1 AND archived_at IS NULL FOR UPDATE",
            price.product_ref,
        )
        if not live:
            return None
        archived = await conn.fetchrow(
            f"""
            UPDATE prices AS pr SET archived_at = now()
            WHERE pr.product_ref = $1 AND pr.edition IS NOT DISTINCT FROM $2
              AND pr.currency = $3 AND pr.archived_at IS NULL
            RETURNING {_PRICE}
            """,
            price.product_ref,
            price.edition,
            price.currency,
        )
        row = await conn.fetchrow(
            f"""
            INSERT INTO prices AS pr (product_ref, edition, currency, amount, billing_period)
            VALUES ($1, $2, $3, $4, $5)
            RETURNING {_PRICE}
            """,
            price.product_ref,
            price.edition,
            price.currency,
            price.amount,
            price.billing_period,
        )
    return PriceChange(_price(row), _price(archived) if archived else None)


async def archive_product(conn: asyncpg.Connection, ref: str) -> Product | None:
    """Archive a live product and its live prices; None if there is no live product `ref`."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""
            UPDATE products AS p SET archived_at = now()
            WHERE p.ref = $1 AND p.archived_at IS NULL
            RETURNING {_PRODUCT}
            """,
            ref,
        )
        if row is None:
            return None
        await conn.execute(
            "UPDATE prices SET archived_at = now() WHERE product_ref = $1 AND archived_at IS NULL",
            ref,
        )
    return _product(row)


async def archive_price(conn: asyncpg.Connection, price_id: int) -> Price | None:
    """Archive one live price; None if there is no live price `price_id`."""
    row = await conn.fetchrow(
        f"""
        UPDATE prices AS pr SET archived_at = now()
        WHERE pr.id = $1 AND pr.archived_at IS NULL
        RETURNING {_PRICE}
        """,
        price_id,
    )
    return _price(row) if row else None


async def get_price(conn: asyncpg.Connection, price_id: int) -> Price | None:
    """The price, archived or not (an order keeps pointing at the price it was made with)."""
    row = await conn.fetchrow(f"SELECT {_PRICE} FROM prices pr WHERE pr.id = $1", price_id)
    return _price(row) if row else None


async def live_price(
    conn: asyncpg.Connection, product_ref: str, edition: str | None, currency: str
) -> LivePrice | None:
    """The live product and its live price in `currency` for `edition`, or None.

    A price for the edition itself wins over a price for any edition (edition NULL). An edition
    the product does not list, an archived product and an archived price all give None; a plan
    (no editions) is looked up with edition None.
    """
    row = await conn.fetchrow(
        f"""
        SELECT {_PRODUCT}, {_PRICE}
        FROM products p JOIN prices pr ON pr.product_ref = p.ref
        WHERE p.ref = $1 AND p.archived_at IS NULL AND pr.archived_at IS NULL
          AND pr.currency = $3
          AND (pr.edition IS NULL OR pr.edition = $2)
          AND ($2::text IS NULL OR $2 = ANY (p.editions))
        ORDER BY pr.edition IS NULL
        LIMIT 1
        """,
        product_ref,
        edition,
        currency.upper(),
    )
    return LivePrice(_product(row), _price(row)) if row else None
