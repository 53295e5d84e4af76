"""The sandboxes `colmena dev` serves, against colmena's own gateways: their wire shapes, their
rules, the sandbox mark on rates, and that only dev ever mounts them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from jsonschema import Draft202012Validator
from pydantic import SecretStr

from colmena.actors.payments_reconcile import reconcile_mercadopago
from colmena.cli.payments import _api_source
from colmena.cli.rates import _describe
from colmena.config import Settings
from colmena.config.dev_stack import DevStack
from colmena.domain.payment_events import PaymentUpdate, interpret_mercadopago
from colmena.domain.payment_state import Status
from colmena.domain.rates import Source, binance_observation
from colmena.gateways import mercadopago as mp
from colmena.gateways import rate_sources
from colmena.gateways.bcv import scrape_bcv
from colmena.gateways.binance import (
    BinanceApiCodeError,
    Side,
    fetch_p2p_book,
    parse_search_response,
)
from colmena.http.app import create_app
from colmena.http.openapi import load_document
from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.resources import Resources
from colmena.runtime.startup import amqp_resources
from colmena.sandbox.mercadopago import mercadopago_app
from colmena.sandbox.rates import bcv_app, binance_app
from colmena.sandbox.serving import dev_sandboxes, mount_sandboxes, with_sandboxes
from colmena.store import rates as rate_store
from colmena.store.rate_keeping import scrape
from tests.conftest import wait_for

ORDER = {
    "amount": Decimal("1500.00"),
    "email": "comprador@example.com",
    "description": "colmena-enterprise",
    "metadata": {"product_kind": "license", "product": "colmena-enterprise"},
}
FAST = {"timeout": 5, "attempts": 1}


class Clock:
    """UTC time that a test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 9, 1, 15, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[dict[str, web.Application]], Awaitable[str]]]:
    """Serve sub-apps under /sandbox/<name> like the dev ingress; returns the /sandbox URL."""
    servers: list[TestServer] = []

    async def start(apps: dict[str, web.Application]) -> str:
        app = web.Application()
        for name, sub in apps.items():
            app.add_subapp(f"/sandbox/{name}", sub)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/sandbox"))

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def mp_api(serve) -> tuple[mp.MercadoPagoClient, str, Clock]:
    clock = Clock()
    base = await serve({"mercadopago": mercadopago_app(clock=clock)})
    url = f"{base}/mercadopago"
    return client_for(url), url, clock


def client_for(url: str, token: str = mp.SANDBOX_ACCESS_TOKEN) -> mp.MercadoPagoClient:
    return mp.MercadoPagoClient(access_token=token, base_url=url, timeout_s=5.0)


async def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The SDK blocks (requests): run it off the loop that serves the sandbox."""
    return await asyncio.to_thread(function, *args, **kwargs)


# --- Mercado Pago ---------------------------------------------------------------------------------


async def test_an_approved_test_card_payment_is_what_the_payments_actor_settles(mp_api) -> None:
    client, _, _ = mp_api
    made = await call(mp.create_test_payment, client, "approved", **ORDER)

    fetched = await call(client.get_payment, str(made["id"]))

    assert isinstance(fetched["id"], int)
    assert fetched["live_mode"] is False
    assert (fetched["status"], fetched["status_detail"]) == ("approved", "accredited")
    assert fetched["card"]["cardholder"]["name"] == "APRO"
    update = interpret_mercadopago(fetched)
    assert isinstance(update, PaymentUpdate)
    assert update.status is Status.APPROVED
    assert (update.amount_minor, update.currency) == (150_000, "MXN")
    assert update.customer_email == "comprador@example.com"
    assert update.product_kind == "license"


@pytest.mark.parametrize(
    ("status", "detail"),
    [
        ("approved", "accredited"),
        ("authorized", "pending_capture"),
        ("in_process", "pending_contingency"),
        ("pending", "pending_waiting_payment"),
        ("rejected", "cc_rejected_other_reason"),
        ("cancelled", "by_collector"),
        ("refunded", "refunded"),
    ],
)
async def test_every_test_status_is_made_through_the_api(mp_api, status: str, detail: str) -> None:
    client, _, _ = mp_api
    made = await call(mp.create_test_payment, client, status, **ORDER)

    fetched = await call(client.get_payment, str(made["id"]))

    assert (fetched["status"], fetched["status_detail"]) == (status, detail)
    update = interpret_mercadopago(fetched)
    assert isinstance(update, PaymentUpdate) and update.status.value == status
    if status == "refunded":
        assert fetched["transaction_amount_refunded"] == 1500.0
        assert [refund["amount"] for refund in fetched["refunds"]] == [1500.0]


async def test_the_holder_name_decides_as_mercado_pagos_test_cards_table(mp_api) -> None:
    client, _, _ = mp_api

    async def pay(holder: str) -> dict[str, Any]:
        token = await call(
            client.create_card_token, mp.TEST_CARD | {"cardholder": {"name": holder}}
        )
        order = {"transaction_amount": 10, "payer": {"email": "a@example.com"}}
        return await call(client.create_payment, order | {"token": token["id"]})

    funds = await pay("FUND")
    assert (funds["status"], funds["status_detail"]) == (
        "rejected",
        "cc_rejected_insufficient_amount",
    )
    approved = await pay("apro test")
    assert (approved["status"], approved["payment_method_id"]) == ("approved", "master")
    with pytest.raises(mp.MercadoPagoRejected, match="test names"):
        await pay("Juan Perez")


async def test_a_card_token_pays_once(mp_api) -> None:
    client, _, _ = mp_api
    token = await call(client.create_card_token, mp.TEST_CARD | {"cardholder": {"name": "APRO"}})
    order = {"transaction_amount": 10, "payer": {"email": "a@example.com"}, "token": token["id"]}
    await call(client.create_payment, order)

    with pytest.raises(mp.MercadoPagoRejected, match="Card Token not found"):
        await call(client.create_payment, order)


async def test_a_repeated_idempotency_key_answers_the_first_payment(mp_api) -> None:
    client, url, _ = mp_api
    headers = {"Authorization": f"Bearer {mp.SANDBOX_ACCESS_TOKEN}", "X-Idempotency-Key": "k-1"}
    body = {
        "transaction_amount": 10,
        "payer": {"email": "a@example.com"},
        "payment_method_id": "oxxo",
    }
    async with aiohttp.ClientSession() as session:
        answers = []
        for _ in range(2):
            async with session.post(f"{url}/v1/payments", json=body, headers=headers) as response:
                answers.append((response.status, (await response.json())["id"]))

    assert [status for status, _ in answers] == [201, 200]
    assert answers[0][1] == answers[1][1]


async def test_cancel_and_refund_follow_the_payment_state(mp_api) -> None:
    client, _, _ = mp_api
    approved = await call(mp.create_test_payment, client, "approved", **ORDER)
    pending = await call(mp.create_test_payment, client, "pending", **ORDER)

    with pytest.raises(mp.MercadoPagoRejected, match="not valid for the current payment state"):
        await call(client.cancel_payment, str(approved["id"]))
    with pytest.raises(mp.MercadoPagoRejected, match="not valid for the current payment state"):
        await call(client.refund_payment, str(pending["id"]))
    assert (await call(client.cancel_payment, str(pending["id"])))["status"] == "cancelled"


async def test_only_a_test_token_is_accepted_and_unknown_payments_are_not_found(mp_api) -> None:
    client, url, _ = mp_api
    with pytest.raises(mp.MercadoPagoRejected, match="HTTP 401"):
        await call(client_for(url, "APP_USR-1234-production").get_payment, "1")
    with pytest.raises(mp.MercadoPagoNotFound):
        await call(client.get_payment, "1")


async def test_search_pages_and_filters_by_update_time(mp_api) -> None:
    client, _, clock = mp_api
    made = []
    for _ in range(3):
        made.append(await call(mp.create_test_payment, client, "approved", **ORDER))
        clock.now += timedelta(minutes=10)
    filters = {
        "sort": "date_last_updated",
        "criteria": "desc",
        "range": "date_last_updated",
        "begin_date": (clock.now - timedelta(minutes=25)).isoformat(),
        "end_date": "NOW",
        "offset": 0,
        "limit": 1,
    }

    first = await call(client.search_payments, filters)
    second = await call(client.search_payments, filters | {"offset": 1})
    everything = await call(client.search_payments, filters | {"begin_date": "NOW-1DAYS"})

    assert first["paging"] == {"total": 2, "limit": 1, "offset": 0}
    assert [p["id"] for p in first["results"] + second["results"]] == [made[2]["id"], made[1]["id"]]
    assert everything["paging"]["total"] == 3
    with pytest.raises(mp.MercadoPagoRejected, match="Date format"):
        await call(client.search_payments, filters | {"begin_date": "yesterday"})


async def test_reconcile_mercadopago_settles_what_it_finds_in_the_sandbox(
    serve, settings: Settings
) -> None:
    base = await serve({"mercadopago": mercadopago_app()})
    sandboxed = with_sandboxes(settings, {"mercadopago": f"{base}/mercadopago"})
    client = client_for(sandboxed.mercadopago_api_url)
    for _ in range(2):
        await call(mp.create_test_payment, client, "approved", **ORDER)
    resources = Resources(
        sandboxed,
        database_url=sandboxed.require_database_url(),
        publisher=AmqpPublisher(sandboxed.require_broker_url(), sandboxed.queue_prefix),
    )
    try:
        result = await reconcile_mercadopago(
            resources, since=datetime.now(UTC) - timedelta(hours=1)
        )
    finally:
        await resources.close()

    assert (result.checked, result.queued) == (2, 2)


async def test_outside_dev_trigger_only_notifies_and_names_the_configured_api(
    mp_api, settings: Settings, make_client, start_worker, db
) -> None:
    client, url, _ = mp_api
    made = await call(mp.create_test_payment, client, "approved", **ORDER)
    configured = with_sandboxes(settings, {"mercadopago": url}).model_copy(
        update={"mercadopago_webhook_secret": SecretStr("whsec-mp-test")}
    )
    start_worker(settings_override=configured, queues=["payments"])
    ingress = await make_client(configured)
    env = {key: value for key, value in os.environ.items() if not key.startswith("COLMENA_")}
    env |= {
        "COLMENA_DATABASE_URL": configured.require_database_url(),
        "COLMENA_MERCADOPAGO_WEBHOOK_SECRET": "whsec-mp-test",
        "COLMENA_MERCADOPAGO_API_URL": url,
    }
    args = ["trigger", "mercadopago", "approved", "--payment-id", str(made["id"])]
    args += ["--url", str(ingress.make_url("/webhooks/mercadopago"))]

    sent = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "colmena", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert f"Mercado Pago API: {url} (COLMENA_MERCADOPAGO_API_URL)" in sent.stdout
    assert "sandbox payment" not in sent.stdout
    query = "SELECT status FROM payments WHERE provider_payment_id = $1"
    assert await wait_for(lambda: db.fetchval(query, str(made["id"]))) == "approved"


def test_the_trigger_does_not_name_an_api_url_it_cannot_know() -> None:
    stack = DevStack(
        pid=1,
        process_started="1",
        database_url="postgresql:///dev",
        broker_url=None,
        ingress_url="http://127.0.0.1:8080",
        control_token="t",
    )
    here = Settings(_env_file=None, mercadopago_api_url="http://elsewhere.example")

    assert "elsewhere" not in _api_source(here, stack)
    assert "is configured with" in _api_source(here, stack)
    assert _api_source(Settings(_env_file=None), None) == (
        "https://api.mercadopago.com (COLMENA_MERCADOPAGO_API_URL is unset)"
    )


# --- rates ----------------------------------------------------------------------------------------


async def test_the_bcv_sandbox_page_is_read_by_colmenas_parser_dated_today(serve) -> None:
    base = await serve({"bcv": bcv_app(today=lambda: date(2026, 9, 2))})

    page = await scrape_bcv(f"{base}/bcv/", **FAST)

    assert page.effective_date == date(2026, 9, 2)
    assert page.rates["USD/VES"] == Decimal("794.99170000")
    assert set(page.rates) == {"USD/VES", "EUR/VES", "CNY/VES", "TRY/VES", "RUB/VES"}


async def test_the_binance_sandbox_answers_the_adv_search_of_colmenas_gateway(serve) -> None:
    base = await serve({"binance": binance_app()})
    url = f"{base}/binance{rate_sources.BINANCE_SEARCH_PATH}"

    book = await fetch_p2p_book(url, pay_types=["PagoMovil"], **FAST)
    observation = binance_observation(book[Side.BUY], book[Side.SELL], top_n=10, today=date.today())

    assert {side: len(adverts) for side, adverts in book.items()} == {Side.BUY: 8, Side.SELL: 7}
    assert observation.sell is not None and observation.buy is not None
    assert observation.sell < observation.value < observation.buy
    async with aiohttp.ClientSession() as session:
        body = {"asset": "USDT", "fiat": "VES", "tradeType": "BUY", "payTypes": ["Mercantil"]}
        async with session.post(url, json=body) as response:
            assert parse_search_response(await response.json(), Side.BUY) == []
        async with session.post(url, json=body | {"asset": "BTC"}) as response:
            refused = await response.json()
    with pytest.raises(BinanceApiCodeError, match="illegal parameter"):
        parse_search_response(refused, Side.BUY)


def test_with_sandboxes_points_only_unconfigured_sources_and_marks_them() -> None:
    configured = Settings(bcv_url="https://bcv.example/", _env_file=None)
    sandboxes = {"bcv": "http://dev/sandbox/bcv", "binance": "http://dev/sandbox/binance"}

    pointed = rate_sources.with_sandboxes(configured, sandboxes)

    assert pointed.bcv_url == "https://bcv.example/"
    assert (
        pointed.binance_p2p_url == f"http://dev/sandbox/binance{rate_sources.BINANCE_SEARCH_PATH}"
    )
    assert pointed.rates_sandbox_sources == ["binance"]


def test_dev_serves_a_sandbox_for_each_unconfigured_provider_only(tmp_path: Path) -> None:
    bare = Settings(_env_file=None, http_port=8123, data_dir=tmp_path)
    configured = Settings(
        _env_file=None,
        mercadopago_access_token="APP_USR-x",
        binance_p2p_url="https://b.example/",
        pac_token="a-real-sw-token",
        stripe_secret_key="sk_live_x",
        bitso_api_key="bitso-key",
        bitso_api_secret="bitso-secret",
    )

    everything = dev_sandboxes(bare)
    pointed = with_sandboxes(bare, everything)

    assert everything == {
        name: f"http://127.0.0.1:8123/sandbox/{name}"
        for name in ("mercadopago", "bcv", "binance", "pac", "stripe", "stripe-billing", "bitso")
    }
    assert dev_sandboxes(configured) == {"bcv": "http://127.0.0.1:8080/sandbox/bcv"}
    assert pointed.mercadopago_api_url == everything["mercadopago"]
    assert isinstance(pointed.mercadopago_access_token, SecretStr)
    assert pointed.mercadopago_access_token.get_secret_value().startswith("TEST-sandbox-")
    assert sorted(pointed.rates_sandbox_sources) == ["bcv", "binance"]


async def test_sandbox_rates_are_stored_and_shown_marked(
    serve, settings: Settings, db, make_client
):
    base = await serve({"bcv": bcv_app(), "binance": binance_app()})
    sources = {"bcv": f"{base}/bcv", "binance": f"{base}/binance"}
    sandboxed = rate_sources.with_sandboxes(settings, sources)
    unmarked = settings.model_copy(update={"bcv_url": sandboxed.bcv_url})

    reports = [await scrape(source, db, sandboxed, fetch=rate_sources.fetch) for source in Source]
    plain = await scrape(Source.BCV, db, unmarked, fetch=rate_sources.fetch)

    assert [report.ok for report in reports] == [True, True]
    rows = await rate_store.recent(db, limit=20)
    assert {row.source for row in rows if row.sandbox} == {"bcv", "binance"}
    assert [row.sandbox for row in rows if row.id in {r.row.id for r in plain.results}] == [
        False
    ] * len(plain.results)
    assert all("[sandbox]" in _describe(row) for row in rows if row.sandbox)
    assert not any("[sandbox]" in _describe(row) for row in rows if not row.sandbox)

    client = await make_client()
    latest = await (await client.get("/api/v1/rates/latest")).json()
    schema = json.loads(load_document())
    rate_schema = schema["components"]["schemas"]["Rate"] | {"components": schema["components"]}
    for rate in latest["rates"]:
        Draft202012Validator(rate_schema).validate(rate)
    binance = [rate for rate in latest["rates"] if rate["source"] == "binance"]
    assert binance and all(rate["sandbox"] is True for rate in binance)


# --- never in production --------------------------------------------------------------------------


def _paths(app: web.Application) -> list[str]:
    return [resource.canonical for resource in app.router.resources()]


def test_the_production_ingress_has_no_sandbox_route() -> None:
    settings = Settings(
        _env_file=None,
        database_url="postgresql://colmena@127.0.0.1:5432/colmena",
        broker_url="amqp://guest:guest@127.0.0.1:5672/",
    )
    app = create_app(settings, amqp_resources(settings))  # as `colmena ingress` builds it
    assert _paths(app) and not [path for path in _paths(app) if path.startswith("/sandbox")]

    mount_sandboxes(app, dev_sandboxes(settings))  # what only `colmena dev` does

    assert {path for path in _paths(app) if path.startswith("/sandbox")} == {
        "/sandbox/mercadopago",
        "/sandbox/bcv",
        "/sandbox/binance",
        "/sandbox/pac",
        "/sandbox/stripe",
        "/sandbox/stripe-billing",
        "/sandbox/bitso",
    }
