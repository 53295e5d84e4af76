"""The catalog: domain rules, one live price per key in the store, `colmena catalog`, the route."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from colmena.domain.catalog import (
    CatalogError,
    check_amount,
    check_currency,
    decimal_amount,
    license_product,
    new_price,
    plan_product,
    stripe_amount,
)
from colmena.domain.money import EXPONENTS, WHOLE_UNIT_CURRENCIES, price_places, to_minor
from colmena.sandbox.catalog import SAMPLE_PRICES, seed_sample_catalog
from colmena.store import catalog as store
from tests.licenses_support import run_cli

BOT = license_product("colmena-bot", "colmena Bot", "colmena-bot", ["standard", "pro"], 10)
PRO = plan_product("plan-pro", "Pro", "pro")
# Stripe's zero-decimal currencies (docs.stripe.com/currencies#zero-decimal).
STRIPE_ZERO_DECIMAL = {
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
}  # fmt: skip


# --- currencies: one class each ------------------------------------------------------------------


def test_two_decimal_currencies_take_cents_and_refuse_finer() -> None:
    assert check_amount("1500.5", "MXN") == Decimal("1500.50")
    assert stripe_amount(Decimal("1500.50"), "MXN") == 150050
    assert decimal_amount(Decimal("1500.50"), "MXN") == Decimal("1500.50")
    with pytest.raises(CatalogError, match="at most 2 decimals"):
        check_amount("19.999", "USD")


def test_zero_decimal_currencies_take_whole_units_only() -> None:
    assert check_amount("1500.00", "CLP") == Decimal("1500")
    assert stripe_amount(Decimal("1500"), "CLP") == 1500
    assert decimal_amount(Decimal("1500"), "CLP") == Decimal("1500")
    with pytest.raises(CatalogError, match="no decimals"):
        check_amount("1500.5", "CLP")


def test_cop_is_whole_pesos_counted_in_cents_at_stripe() -> None:
    """ISO and Stripe give COP two decimals; Mercado Pago takes whole pesos only."""
    assert EXPONENTS["COP"] == 2 and price_places("COP") == 0
    assert check_amount("350000", "COP") == Decimal("350000")
    assert stripe_amount(Decimal("350000"), "COP") == 35_000_000
    assert decimal_amount(Decimal("350000"), "COP") == Decimal("350000")
    with pytest.raises(CatalogError, match="no decimals"):
        check_amount("350000.50", "COP")
    with pytest.raises(ValueError):
        decimal_amount(Decimal("350000.50"), "COP")


def test_the_money_table_agrees_with_stripes_zero_decimal_list() -> None:
    zero = {code for code, places in EXPONENTS.items() if places == 0}
    assert zero <= STRIPE_ZERO_DECIMAL
    assert not (set(EXPONENTS) - zero) & STRIPE_ZERO_DECIMAL
    assert WHOLE_UNIT_CURRENCIES <= set(EXPONENTS) - zero


def test_to_minor_never_rounds() -> None:
    assert to_minor(Decimal("0.01"), "usd") == 1
    for bad in (Decimal("0.001"), Decimal("NaN"), Decimal("Infinity")):
        with pytest.raises(ValueError):
            to_minor(bad, "USD")


# --- validation: every rule refuses -------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: license_product("Bad Ref", "x", "dir", ["std"], 1), "ref"),
        (lambda: license_product("-x", "x", "dir", ["std"], 1), "ref"),
        (lambda: license_product("x" * 64, "x", "dir", ["std"], 1), "ref"),
        (lambda: license_product("ok", "", "dir", ["std"], 1), "name"),
        (lambda: license_product("ok", "x" * 201, "dir", ["std"], 1), "name"),
        (lambda: license_product("ok", "x", "../etc", ["std"], 1), "package_dir"),
        (lambda: license_product("ok", "x", "a/b", ["std"], 1), "package_dir"),
        (lambda: license_product("ok", "x", "dir", [], 1), "editions"),
        (lambda: license_product("ok", "x", "dir", ["std", "std"], 1), "editions"),
        (lambda: license_product("ok", "x", "dir", ["Std!"], 1), "edition"),
        (lambda: license_product("ok", "x", "dir", [f"e{i}" for i in range(21)], 1), "editions"),
        (lambda: license_product("ok", "x", "dir", ["std"], 0), "max_seats"),
        (lambda: license_product("ok", "x", "dir", ["std"], 100_001), "max_seats"),
        (lambda: plan_product("ok", "x", "Not A Plan"), "plan"),
        (lambda: check_currency("XYZ"), "currency"),
        (lambda: check_currency("pesos"), "currency"),
        (lambda: check_amount("0", "MXN"), "amount"),
        (lambda: check_amount("-3", "MXN"), "amount"),
        (lambda: check_amount("abc", "MXN"), "amount"),
        (lambda: check_amount("NaN", "MXN"), "amount"),
        (lambda: check_amount("1e12", "MXN"), "amount"),
        (lambda: new_price(BOT, currency="MXN", amount="10", edition="gold"), "edition"),
        (lambda: new_price(BOT, currency="USD", amount="1", billing_period="year"),
         "billing_period"),
        (lambda: new_price(PRO, currency="MXN", amount="1"), "billing_period"),
        (lambda: new_price(PRO, currency="USD", amount="1", billing_period="day"),
         "billing_period"),
        (lambda: new_price(PRO, currency="MXN", amount="1", edition="x", billing_period="year"),
         "edition"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_naming_the_field(make, field: str) -> None:
    with pytest.raises(CatalogError) as refused:
        make()
    assert refused.value.field == field


def test_currency_is_case_insensitive_and_amounts_keep_their_scale() -> None:
    price = new_price(BOT, currency=" mxn ", amount="1500", edition="pro")
    assert (price.currency, price.amount, price.edition) == ("MXN", Decimal("1500.00"), "pro")


# --- store ---------------------------------------------------------------------------------------


async def test_a_new_price_archives_the_live_one_in_the_same_step(db) -> None:
    assert (await store.add_product(db, BOT)).editions == ("standard", "pro")
    assert await store.add_product(db, BOT) is None
    first = await store.set_price(db, new_price(BOT, currency="MXN", amount="1500", edition="pro"))
    assert first is not None and first.archived is None
    assert first.price.amount == Decimal("1500.00")
    second = await store.set_price(db, new_price(BOT, currency="MXN", amount="1800", edition="pro"))
    assert second is not None and second.archived is not None
    assert second.archived.id == first.price.id and second.archived.archived_at is not None
    live = await store.list_prices(db, product_ref="colmena-bot")
    assert [p.id for p in live] == [second.price.id]
    every = await store.list_prices(db, product_ref="colmena-bot", include_archived=True)
    assert {p.id for p in every} == {first.price.id, second.price.id}


async def test_live_price_prefers_the_edition_and_never_returns_archived_rows(db) -> None:
    await store.add_product(db, BOT)
    any_edition = await store.set_price(db, new_price(BOT, currency="USD", amount="50"))
    pro = await store.set_price(db, new_price(BOT, currency="USD", amount="80", edition="pro"))
    assert any_edition and pro
    found = await store.live_price(db, "colmena-bot", "pro", "usd")
    assert found is not None and found.price.id == pro.price.id
    assert found.product.package_dir == "colmena-bot"
    standard = await store.live_price(db, "colmena-bot", "standard", "USD")
    assert standard is not None and standard.price.id == any_edition.price.id
    assert await store.live_price(db, "colmena-bot", "gold", "USD") is None
    assert await store.live_price(db, "colmena-bot", "pro", "MXN") is None
    assert await store.live_price(db, "nothing", "pro", "USD") is None

    assert await store.archive_price(db, pro.price.id) is not None
    assert await store.archive_price(db, pro.price.id) is None
    fallback = await store.live_price(db, "colmena-bot", "pro", "USD")
    assert fallback is not None and fallback.price.id == any_edition.price.id

    assert await store.archive_product(db, "colmena-bot") is not None
    assert await store.live_price(db, "colmena-bot", "standard", "USD") is None
    assert await store.list_prices(db, product_ref="colmena-bot") == []
    assert await store.set_price(db, new_price(BOT, currency="USD", amount="9")) is None
    assert await store.archive_product(db, "colmena-bot") is None


async def test_plans_are_priced_per_period_and_must_name_a_plan(db) -> None:
    await store.add_product(db, PRO)
    change = await store.set_price(
        db, new_price(PRO, currency="MXN", amount="299", billing_period="month")
    )
    assert change is not None
    found = await store.live_price(db, "plan-pro", None, "MXN")
    assert found is not None and found.price.billing_period == "month"
    assert (await store.product_for_plan(db, "pro")).ref == "plan-pro"
    with pytest.raises(CatalogError, match="no plan 'platinum'"):
        await store.add_product(db, plan_product("plan-platinum", "Platinum", "platinum"))
    assert await store.get_product(db, "plan-platinum") is None


async def test_the_sample_catalog_seeds_once_and_keeps_operator_changes(db) -> None:
    assert await seed_sample_catalog(db) == len(SAMPLE_PRICES)
    cop = await store.live_price(db, "colmena-enterprise", "enterprise", "COP")
    assert cop is not None and cop.price.amount == Decimal("1050000.00")
    assert await store.archive_price(db, cop.price.id) is not None
    assert await seed_sample_catalog(db) == 0
    assert await store.live_price(db, "colmena-enterprise", "enterprise", "COP") is None
    assert await store.live_price(db, "plan-free", None, "MXN") is None
    assert (await store.get_product(db, "plan-free")).plan == "free"


# --- CLI -----------------------------------------------------------------------------------------


async def test_the_cli_adds_prices_lists_and_archives(settings, db) -> None:
    add = await run_cli(
        settings,
        ["catalog", "add", "colmena-bot", "--name", "colmena Bot", "--package-dir", "colmena-bot",
         "--edition", "standard", "--edition", "pro", "--max-seats", "10"],
    )  # fmt: skip
    assert add.exit_code == 0, add.output
    assert "added license product colmena-bot" in add.output
    plan = await run_cli(settings, ["catalog", "add", "plan-pro", "--name", "Pro", "--plan", "pro"])
    assert plan.exit_code == 0, plan.output

    price = await run_cli(
        settings, ["catalog", "price", "colmena-bot", "1500", "mxn", "--edition", "pro"]
    )
    assert price.exit_code == 0, price.output
    assert "1,500.00 MXN, edition pro for colmena-bot" in price.output
    again = await run_cli(
        settings, ["catalog", "price", "colmena-bot", "1800", "MXN", "--edition", "pro"]
    )
    assert again.exit_code == 0 and "archived price #" in again.output
    monthly = await run_cli(
        settings, ["catalog", "price", "plan-pro", "299", "USD", "--period", "month"]
    )
    assert monthly.exit_code == 0, monthly.output

    table = await run_cli(settings, ["catalog", "list"])
    assert table.exit_code == 0, table.output
    assert "1,800.00 MXN" in table.output and "1,500.00 MXN" not in table.output
    assert "299.00 USD" in table.output and "grants plan pro" in table.output
    listed = await run_cli(settings, ["catalog", "list", "--json", "--all"])
    rows = {row["ref"]: row for row in json.loads(listed.output)}
    amounts = sorted((p["amount"], p["archived_at"] is None) for p in rows["colmena-bot"]["prices"])
    assert amounts == [("1500.00", False), ("1800.00", True)]
    assert rows["plan-pro"]["prices"][0]["amount_minor"] == 29900

    price_id = await db.fetchval("SELECT id FROM prices WHERE product_ref = 'plan-pro'")
    archived = await run_cli(settings, ["catalog", "archive", "--price", str(price_id)])
    assert archived.exit_code == 0 and f"archived price #{price_id}" in archived.output
    gone = await run_cli(settings, ["catalog", "archive", "colmena-bot"])
    assert gone.exit_code == 0, gone.output
    assert await db.fetchval("SELECT count(*) FROM prices WHERE archived_at IS NULL") == 0
    live = await run_cli(settings, ["catalog", "list", "--json"])
    assert [row["ref"] for row in json.loads(live.output)] == ["plan-pro"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "Bad", "--name", "x", "--plan", "pro"], "lowercase letters"),
        (["add", "x", "--name", "x"], "needs --package-dir"),
        (["add", "x", "--name", "x", "--plan", "pro", "--max-seats", "3"], "takes no"),
        (["add", "x", "--name", "x", "--package-dir", "d", "--edition", "e", "--max-seats", "0"],
         "max_seats"),
        (["add", "x", "--name", "x", "--plan", "platinum"], "no plan 'platinum'"),
        (["add", "seeded", "--name", "x", "--plan", "pro"], "already exists"),
        (["price", "seeded", "0", "MXN", "--period", "month"], "positive"),
        (["price", "seeded", "10.5", "CLP", "--period", "month"], "no decimals"),
        (["price", "seeded", "10", "XYZ", "--period", "month"], "not one colmena knows"),
        (["price", "seeded", "10", "MXN"], "billing period"),
        (["price", "seeded", "10", "MXN", "--period", "week"], "week"),
        (["list", "--currency", "XYZ"], "not one colmena knows"),
        (["archive"], "one product REF"),
        (["archive", "seeded", "--price", "1"], "one product REF"),
    ],
)  # fmt: skip
async def test_bad_input_exits_2_with_one_line(settings, args, message: str) -> None:
    seeded = await run_cli(settings, ["catalog", "add", "seeded", "--name", "x", "--plan", "pro"])
    assert seeded.exit_code == 0, seeded.output
    result = await run_cli(settings, ["catalog", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.parametrize(
    "args",
    [["price", "nothing", "10", "MXN"], ["archive", "nothing"], ["archive", "--price", "999"]],
)
async def test_unknown_product_or_price_exits_1(settings, args) -> None:
    result = await run_cli(settings, ["catalog", *args])
    assert result.exit_code == 1, result.output
    assert "no live" in result.output


# --- HTTP ----------------------------------------------------------------------------------------


async def test_the_public_catalog_shows_live_products_and_prices(db, client) -> None:
    await seed_sample_catalog(db)
    await store.add_product(db, BOT)
    await store.archive_product(db, "colmena-bot")
    response = await client.get("/api/v1/catalog")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "public, max-age=60"
    products = {p["ref"]: p for p in (await response.json())["products"]}
    assert set(products) == {"colmena-enterprise", "plan-free", "plan-pro", "plan-enterprise"}
    enterprise = products["colmena-enterprise"]
    assert "package_dir" not in enterprise and enterprise["max_seats"] == 50
    cop = next(
        p for p in enterprise["prices"] if (p["currency"], p["edition"]) == ("COP", "standard")
    )
    assert (cop["amount"], cop["amount_minor"], cop["exponent"]) == ("350000.00", 35_000_000, 2)
    assert products["plan-free"]["prices"] == [] and products["plan-pro"]["plan"] == "pro"

    usd_plans = await (await client.get("/api/v1/catalog?currency=usd&kind=plan")).json()
    assert [p["ref"] for p in usd_plans["products"]] == ["plan-enterprise", "plan-pro"]
    assert {price["currency"] for p in usd_plans["products"] for price in p["prices"]} == {"USD"}
    assert {price["billing_period"] for p in usd_plans["products"] for price in p["prices"]} == {
        "month"
    }
    cop_only = await (await client.get("/api/v1/catalog?currency=COP")).json()
    assert [p["ref"] for p in cop_only["products"]] == ["colmena-enterprise"]
    nobody = await client.get("/api/v1/catalog?currency=xyz")  # well formed, priced by none
    assert (nobody.status, (await nobody.json())["products"]) == (200, [])


@pytest.mark.parametrize(
    ("query", "parameter"),
    [("currency=MX", "currency"), ("currency=", "currency"), ("kind=bundle", "kind"),
     ("page=2", "page"),
     ("kind=plan&kind=license", "kind")],
)  # fmt: skip
async def test_bad_catalog_parameters_are_400(client, query: str, parameter: str) -> None:
    response = await client.get(f"/api/v1/catalog?{query}")
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "invalid_parameter" and error["parameter"] == parameter
