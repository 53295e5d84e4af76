"""The sample catalog `colmena dev` seeds, so a checkout and a plan upgrade work at first start.

The license product is `colmena-enterprise`, the products directory `colmena dev` creates, with
two editions priced in MXN, USD and COP (whole pesos, as Mercado Pago takes them). The plans are
the plans table's free, pro and enterprise; free has no price (it is where sign-up starts, and a
price is never zero), pro and enterprise are billed monthly in MXN and USD.

Seeding is idempotent: a product that exists is left as it is, and a price is set only where
its product, edition and currency never had one, so whatever an operator changed with
`colmena catalog` survives a restart, an archived sample product or price included.
"""

from __future__ import annotations

import asyncpg

from colmena.domain.catalog import NewProduct, license_product, new_price, plan_product
from colmena.store import catalog as store

SAMPLE_LICENSE = license_product(
    "colmena-enterprise",
    "colmena Enterprise (sample)",
    "colmena-enterprise",
    ["standard", "enterprise"],
    max_seats=50,
)
SAMPLE_PLANS = (
    plan_product("plan-free", "Free", "free"),
    plan_product("plan-pro", "Pro", "pro"),
    plan_product("plan-enterprise", "Enterprise", "enterprise"),
)
# (product, edition, currency, amount, billing period)
SAMPLE_PRICES: tuple[tuple[NewProduct, str | None, str, str, str | None], ...] = (
    (SAMPLE_LICENSE, "standard", "MXN", "1500.00", None),
    (SAMPLE_LICENSE, "standard", "USD", "89.00", None),
    (SAMPLE_LICENSE, "standard", "COP", "350000", None),
    (SAMPLE_LICENSE, "enterprise", "MXN", "4500.00", None),
    (SAMPLE_LICENSE, "enterprise", "USD", "259.00", None),
    (SAMPLE_LICENSE, "enterprise", "COP", "1050000", None),
    (SAMPLE_PLANS[1], None, "MXN", "299.00", "month"),
    (SAMPLE_PLANS[1], None, "USD", "17.00", "month"),
    (SAMPLE_PLANS[2], None, "MXN", "1999.00", "month"),
    (SAMPLE_PLANS[2], None, "USD", "109.00", "month"),
)


async def seed_sample_catalog(conn: asyncpg.Connection) -> int:
    """Add what is missing of the sample catalog; returns how many prices were set."""
    async with conn.transaction():
        for product in (SAMPLE_LICENSE, *SAMPLE_PLANS):
            await store.add_product(conn, product)
        priced = {
            (p.product_ref, p.edition, p.currency)
            for p in await store.list_prices(conn, include_archived=True)
        }
        added = 0
        for product, edition, currency, amount, period in SAMPLE_PRICES:
            if (product.ref, edition, currency) in priced:
                continue
            price = new_price(
                product, currency=currency, amount=amount, edition=edition, billing_period=period
            )
            if await store.set_price(conn, price) is not None:
                added += 1
    return added
