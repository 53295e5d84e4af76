"""`colmena catalog`: what can be bought (license products and tenant plans) and at what price.

`add` makes a product (a license product with --package-dir, --edition and --max-seats, or a
plan with --plan), `price` sets its price in a currency (replacing the live one, which is
archived), `list` shows live products and prices (--all adds archived ones; --json for scripts)
and `archive` withdraws a product or one price. Archived rows are kept for the orders that used
them. Bad input exits 2 with one line naming it; an unknown product or price exits 1.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import click

from colmena.cli.audit import attribute_operator
from colmena.cli.database import with_database
from colmena.config.dev_stack import load_operator_settings
from colmena.domain.catalog import (
    BILLING_PERIODS,
    KINDS,
    CatalogError,
    NewProduct,
    check_currency,
    license_product,
    new_price,
    plan_product,
)
from colmena.domain.money import format_money
from colmena.http.catalog import price_json
from colmena.store import catalog as store


class BadInput(click.ClickException):
    """Input the catalog refuses: one line, exit 2 (as click's own usage errors)."""

    exit_code = 2


def _refused(exc: CatalogError) -> BadInput:
    return BadInput(str(exc))


@click.group("catalog")
def catalog_group() -> None:
    """Products (license products, tenant plans) and their prices per currency."""


T = TypeVar("T")


def _attributed(
    command: str, work: Callable[[asyncpg.Connection], Awaitable[T]]
) -> Callable[[asyncpg.Connection], Awaitable[T]]:
    """`work` in one transaction whose catalog changes the audit trail records as the operator's."""

    async def run(conn: asyncpg.Connection) -> T:
        async with conn.transaction():
            await attribute_operator(conn, command)
            return await work(conn)

    return run


@catalog_group.command("add")
@click.argument("ref")
@click.option("--name", required=True, help="what buyers see")
@click.option("--package-dir", help="license product: its directory under the products dir")
@click.option("--edition", "editions", multiple=True, help="license product: an edition (repeat)")
@click.option("--max-seats", type=int, help="license product: most seats one license may have")
@click.option("--plan", help="plan product: the plan it grants (free, pro, enterprise...)")
def add_command(
    ref: str,
    name: str,
    package_dir: str | None,
    editions: tuple[str, ...],
    max_seats: int | None,
    plan: str | None,
) -> None:
    """Add product REF: a license product (--package-dir, --edition, --max-seats) or a plan."""
    product = _new_product(ref, name, package_dir, list(editions), max_seats, plan)

    async def work(conn: asyncpg.Connection) -> store.Product | None:
        return await store.add_product(conn, product)

    try:
        added = with_database(load_operator_settings(), _attributed("catalog add", work))
    except CatalogError as exc:
        raise _refused(exc) from None
    if added is None:
        raise BadInput(f"product {ref} already exists (refs are never reused, archived or not)")
    click.echo(f"added {added.kind} product {added.ref}: {_describe(added)}")
    click.echo(f"next: colmena catalog price {added.ref} AMOUNT CURRENCY")


def _new_product(
    ref: str,
    name: str,
    package_dir: str | None,
    editions: list[str],
    max_seats: int | None,
    plan: str | None,
) -> NewProduct:
    license_options = package_dir is not None or editions or max_seats is not None
    if plan is not None and license_options:
        raise BadInput(
            "--plan makes a plan product; it takes no --package-dir/--edition/--max-seats"
        )
    try:
        if plan is not None:
            return plan_product(ref, name, plan)
        if package_dir is None or max_seats is None:
            raise BadInput(
                "a license product needs --package-dir, --edition and --max-seats "
                "(or --plan for a plan product)"
            )
        return license_product(ref, name, package_dir, editions, max_seats)
    except CatalogError as exc:
        raise _refused(exc) from None


def _describe(product: store.Product) -> str:
    if product.kind == "plan":
        return f"{product.name}, grants plan {product.plan}"
    return (
        f"{product.name}, package {product.package_dir}, editions {', '.join(product.editions)}, "
        f"up to {product.max_seats} seat(s)"
    )


@catalog_group.command("price")
@click.argument("ref")
@click.argument("amount")
@click.argument("currency")
@click.option("--edition", help="license product: the edition this price is for (default: any)")
@click.option(
    "--period", "billing_period", type=click.Choice(BILLING_PERIODS), help="plan: billed every"
)
def price_command(
    ref: str, amount: str, currency: str, edition: str | None, billing_period: str | None
) -> None:
    """Set REF's price: AMOUNT (a decimal, e.g. 1500.00) in CURRENCY (MXN, USD, COP...).

    The live price for the same edition and currency, if any, is archived in the same step."""

    async def work(conn: asyncpg.Connection) -> store.PriceChange | None:
        product = await store.get_product(conn, ref)
        if product is None or product.archived_at is not None:
            return None
        try:
            price = new_price(
                product,
                currency=currency,
                amount=amount,
                edition=edition,
                billing_period=billing_period,
            )
        except CatalogError as exc:
            raise _refused(exc) from None
        return await store.set_price(conn, price)

    change = with_database(load_operator_settings(), _attributed("catalog price", work))
    if change is None:
        raise click.ClickException(f"no live product {ref}")
    click.echo(f"price #{change.price.id}: {_price_text(change.price)} for {ref}")
    if change.archived is not None:
        click.echo(f"archived price #{change.archived.id} ({_price_text(change.archived)})")


def _price_text(price: store.Price) -> str:
    text = format_money(price.amount, price.currency)
    if price.edition is not None:
        text += f", edition {price.edition}"
    if price.billing_period is not None:
        text += f" a {price.billing_period}"
    return text


def _product_json(product: store.Product, prices: list[store.Price]) -> dict[str, Any]:
    return {
        "ref": product.ref,
        "kind": product.kind,
        "name": product.name,
        "package_dir": product.package_dir,
        "editions": list(product.editions),
        "max_seats": product.max_seats,
        "plan": product.plan,
        "archived_at": product.archived_at.isoformat() if product.archived_at else None,
        "prices": [{**price_json(price), "archived_at": _iso_or_none(price)} for price in prices],
    }


def _iso_or_none(price: store.Price) -> str | None:
    return price.archived_at.isoformat() if price.archived_at else None


@catalog_group.command("list")
@click.option("--kind", type=click.Choice(KINDS))
@click.option("--currency", help="only prices in this currency")
@click.option("--all", "include_archived", is_flag=True, help="archived products and prices too")
@click.option("--json", "as_json", is_flag=True)
def list_command(
    kind: str | None, currency: str | None, include_archived: bool, as_json: bool
) -> None:
    """Products and their prices: live ones, or every one with --all."""
    try:
        code = check_currency(currency) if currency is not None else None
    except CatalogError as exc:
        raise _refused(exc) from None

    async def work(
        conn: asyncpg.Connection,
    ) -> tuple[list[store.Product], list[store.Price]]:
        products = await store.list_products(conn, kind=kind, include_archived=include_archived)
        prices = await store.list_prices(conn, currency=code, include_archived=include_archived)
        return products, prices

    products, prices = with_database(load_operator_settings(), work)
    by_product: dict[str, list[store.Price]] = {}
    for price in prices:
        by_product.setdefault(price.product_ref, []).append(price)
    if as_json:
        rows = [_product_json(p, by_product.get(p.ref, [])) for p in products]
        click.echo(json.dumps(rows, indent=2))
        return
    if not products:
        click.echo("no products (colmena catalog add REF ...)")
        return
    click.echo(f"{'product':<28} {'kind':<8} {'price':>8}  {'amount':>22}  {'edition':<14} period")
    for product in products:
        state = " (archived)" if product.archived_at else ""
        click.echo(f"{product.ref:<28} {product.kind:<8} {'':>8}  {_describe(product)}{state}")
        for price in by_product.get(product.ref, []):
            archived = " (archived)" if price.archived_at else ""
            click.echo(
                f"{'':<28} {'':<8} {f'#{price.id}':>8}  "
                f"{format_money(price.amount, price.currency):>22}  "
                f"{price.edition or 'any':<14} {price.billing_period or '-'}{archived}"
            )


@catalog_group.command("archive")
@click.argument("ref", required=False)
@click.option("--price", "price_id", type=click.IntRange(min=1), help="archive this price only")
def archive_command(ref: str | None, price_id: int | None) -> None:
    """Withdraw product REF (and its prices), or one price with --price ID; both are kept for
    the orders that used them, and never sold again."""
    settings = load_operator_settings()
    if ref is None and price_id is not None:
        chosen = price_id
        price = with_database(
            settings,
            _attributed("catalog archive", lambda conn: store.archive_price(conn, chosen)),
        )
        if price is None:
            raise click.ClickException(f"no live price #{price_id}")
        click.echo(f"archived price #{price.id} ({_price_text(price)}) of {price.product_ref}")
        return
    if ref is None or price_id is not None:
        raise BadInput("name one product REF or one --price ID")
    product = with_database(
        settings, _attributed("catalog archive", lambda conn: store.archive_product(conn, ref))
    )
    if product is None:
        raise click.ClickException(f"no live product {ref}")
    click.echo(f"archived product {product.ref} and its prices; it is no longer sold")


COMMANDS = [catalog_group]
