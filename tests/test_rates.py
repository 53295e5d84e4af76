"""Rate scraping end to end: stand-in BCV (HTTPS, test CA) and Binance servers, real PostgreSQL,
the real worker on RabbitMQ, the ingress API and the CLI.

The invariant every test checks one way or another: the API (latest, history, convert) and the
metrics only ever show accepted or confirmed values; whatever a source serves that is broken,
out of bounds, misdated or a big unconfirmed jump never reaches them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from colmena.actors import all_jobs
from colmena.actors.rates import enqueue_scrape
from colmena.config import Settings, SettingsError, load_settings
from colmena.config.logging import configure_logging
from colmena.domain.rate_schedule import CARACAS, next_run_times
from colmena.domain.rates import Source
from colmena.gateways import rate_sources
from colmena.gateways.bcv import parse_bcv_page
from colmena.http.rates import TtlCache, convert_amount
from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.resources import Resources
from colmena.store import rate_keeping
from colmena.store import rates as store
from tests.conftest import wait_for
from tests.ops_support import ingress_metrics
from tests.standins.rates import (
    FIXTURES,
    StandIn,
    StandInPki,
    bcv_standin,
    binance_standin,
    make_test_pki,
)

NORMAL_USD = Decimal("794.99170000")
BCV_PAIRS = {"USD/VES", "EUR/VES", "CNY/VES", "TRY/VES", "RUB/VES"}


def caracas_today() -> date:
    return datetime.now(CARACAS).date()


async def scrape(
    source: Source, db: asyncpg.Connection, settings: Settings
) -> rate_keeping.ScrapeReport:
    """One on-demand scrape through the real gateways, as `colmena rates scrape` runs it."""
    return await rate_keeping.scrape(source, db, settings, fetch=rate_sources.fetch)


def dated_page(directory: Path, fixture: str, effective: date, *, usd: str | None = None) -> str:
    """A copy of a recorded BCV page whose rate row carries `effective` (the recorded pages are
    from August 2026, which the date gate rightly refuses as stale); the stand-in serves it."""
    html = (FIXTURES / "bcv" / fixture).read_text(encoding="utf-8")
    recorded = parse_bcv_page(html).effective_date.isoformat()
    html = html.replace(
        f'content="{recorded}T00:00:00-04:00"', f'content="{effective.isoformat()}T00:00:00-04:00"'
    )
    if usd is not None:
        html = html.replace("794,99170000", usd)
    path = directory / f"{fixture}-{effective}-{usd}.html"
    path.write_text(html, encoding="utf-8")
    return str(path)  # absolute: the stand-in's FIXTURES / "bcv" / path resolves to it


@pytest.fixture
def pki(tmp_path: Path) -> StandInPki:
    return make_test_pki(tmp_path)


@pytest.fixture
async def bcv_site(pki: StandInPki, tmp_path: Path) -> AsyncIterator[StandIn]:
    async with bcv_standin(pki.server_context) as server:
        server.bcv_page = dated_page(tmp_path, "normal.html", caracas_today())
        yield server


@pytest.fixture
async def binance_site() -> AsyncIterator[StandIn]:
    async with binance_standin() as server:
        yield server


@pytest.fixture
def rates_settings(
    settings: Settings, pki: StandInPki, bcv_site: StandIn, binance_site: StandIn
) -> Settings:
    return settings.model_copy(
        update={
            "bcv_url": bcv_site.url + "/",
            "bcv_ca_bundle": pki.bundle,
            "binance_p2p_url": binance_site.url,
            "rates_timeout_s": 5.0,
            "rates_backoff_s": 0.01,
            "rates_api_cache_s": 0.0,
        }
    )


async def rows(db: asyncpg.Connection, source: str, pair: str | None = None) -> list[store.RateRow]:
    found = await store.recent(db, source=source, limit=1000)
    return [row for row in found if pair is None or row.pair == pair]


async def published_values(client: Any) -> dict[tuple[str, str], str]:
    """What the public API shows: (source, pair) -> value."""
    response = await client.get("/api/v1/rates/latest")
    assert response.status == 200
    return {(r["source"], r["pair"]): r["value"] for r in (await response.json())["rates"]}


async def health(db: asyncpg.Connection, source: str) -> store.SourceHealth:
    return next(h for h in await store.sources(db) if h.source == source)


# --- each recorded case, through the scrape, the store and the API --------------------------------


@pytest.mark.parametrize(
    ("fixture", "days_ahead", "usd", "eur"),
    [
        ("normal.html", 0, "794.99170000", "925.66370000"),
        ("decoy_date.html", 1, "796.41250000", "925.66370000"),
        ("thousands_dot.html", 0, "1012.45610000", "1187.93210000"),
        ("future_date.html", 3, "801.02340000", "925.66370000"),
    ],
)
async def test_bcv_pages_store_the_right_value_and_date(
    rates_settings, db, make_client, bcv_site, tmp_path, fixture, days_ahead, usd, eur
) -> None:
    effective = caracas_today() + timedelta(days=days_ahead)
    bcv_site.bcv_page = dated_page(tmp_path, fixture, effective)

    report = await scrape(Source.BCV, db, rates_settings)

    assert report.outcome == "accepted" and report.ok
    stored = {row.pair: row for row in await rows(db, "bcv")}
    assert set(stored) == BCV_PAIRS
    assert f"{stored['USD/VES'].value:f}" == usd  # all eight decimals, no float on the way
    assert {row.effective_date for row in stored.values()} == {
        effective
    }  # never a decoy span's date
    assert {row.status for row in stored.values()} == {"accepted"}
    client = await make_client(rates_settings)
    shown = await published_values(client)
    assert shown[("bcv", "USD/VES")] == usd
    assert shown[("bcv", "EUR/VES")] == eur


@pytest.mark.parametrize(
    ("page", "mode", "outcome", "requests"),
    [
        ("missing_dolar.html", "ok", "parse_error", 1),
        ("normal.html", "5xx", "http_error", 3),
        ("normal.html", "timeout", "timeout", 3),
    ],
)
async def test_bcv_refusals_store_and_publish_nothing(
    rates_settings, db, make_client, bcv_site, page, mode, outcome, requests
) -> None:
    bcv_site.bcv_page, bcv_site.mode = page, mode
    settings = rates_settings.model_copy(
        update={"rates_timeout_s": 1.0}
    )  # room for a TLS handshake under load

    report = await scrape(Source.BCV, db, settings)

    assert (report.outcome, report.ok, report.results) == (outcome, False, [])
    assert len(bcv_site.requests) == requests
    assert await rows(db, "bcv") == []
    assert (await health(db, "bcv")).consecutive_failures == 1
    client = await make_client(settings)
    assert await published_values(client) == {}


async def test_binance_normal_book_publishes_mid_with_buy_and_sell(
    rates_settings, db, make_client
) -> None:
    report = await scrape(Source.BINANCE, db, rates_settings)

    assert report.outcome == "accepted"
    [row] = await rows(db, "binance")
    assert (row.pair, row.buy, row.sell, row.value) == (
        "USDT/VES",
        Decimal("1156.25"),
        Decimal("1140.70"),
        Decimal("1148.475"),
    )
    assert row.effective_date == caracas_today()
    client = await make_client(rates_settings)
    body = await (await client.get("/api/v1/rates/latest")).json()
    [shown] = body["rates"]
    assert (shown["value"], shown["buy"], shown["sell"], shown["stale"]) == (
        "1148.475",
        "1156.25",
        "1140.70",
        False,
    )


async def test_binance_outlier_does_not_move_the_rate(rates_settings, db, binance_site) -> None:
    binance_site.binance_book["BUY"] = "outlier_buy.json"
    settings = rates_settings.model_copy(update={"binance_top_n": 5})

    await scrape(Source.BINANCE, db, settings)

    [row] = await rows(db, "binance")
    assert row.buy == Decimal("1155.50")  # the 115600 fat finger, largest by volume, was fenced out
    assert row.status == "accepted"


@pytest.mark.parametrize(
    ("book", "mode", "outcome", "requests"),
    [
        ({"BUY": "empty.json", "SELL": "empty.json"}, "ok", "empty", 2),
        ({"BUY": "normal_buy.json", "SELL": "empty.json"}, "ok", "empty", 2),
        ({"BUY": "error_code.json", "SELL": "error_code.json"}, "ok", "api_code", 1),
        (None, "403", "forbidden", 1),
    ],
)
async def test_binance_refusals_store_and_publish_nothing(
    rates_settings, db, make_client, binance_site, book, mode, outcome, requests
) -> None:
    if book is not None:
        binance_site.binance_book = book
    binance_site.mode = mode

    report = await scrape(Source.BINANCE, db, rates_settings)

    assert (report.outcome, report.ok) == (outcome, False)
    assert len(binance_site.requests) == requests
    assert await rows(db, "binance") == []
    client = await make_client(rates_settings)
    assert await published_values(client) == {}


# --- sanity: garbage is kept for the record, never published --------------------------------------


async def test_stale_value_date_is_rejected_and_never_published(
    rates_settings, db, make_client, bcv_site
) -> None:
    bcv_site.bcv_page = "normal.html"  # as recorded: valid on 2026-08-31, months before "today"

    report = await scrape(Source.BCV, db, rates_settings)

    assert report.outcome == "rejected" and not report.ok
    stored = await rows(db, "bcv")
    assert {row.status for row in stored} == {"rejected"}
    assert "days old" in stored[0].reason
    client = await make_client(rates_settings)
    assert await published_values(client) == {}
    history = await client.get("/api/v1/rates/history", params={"pair": "USD/VES"})
    assert (await history.json())["items"] == []
    convert = await client.get(
        "/api/v1/rates/convert", params={"amount": "1", "from": "USD", "to": "VES"}
    )
    assert convert.status == 404


async def test_out_of_bounds_value_is_rejected(rates_settings, db, make_client) -> None:
    settings = rates_settings.model_copy(
        update={
            "rates_bounds": {**rates_settings.rates_bounds, "USD/VES": (Decimal(1), Decimal(100))}
        }
    )

    report = await scrape(Source.BCV, db, settings)

    assert report.outcome == "accepted"  # the other pairs were fine
    [usd] = await rows(db, "bcv", "USD/VES")
    assert usd.status == "rejected" and "outside bounds" in usd.reason
    client = await make_client(settings)
    shown = await published_values(client)
    assert ("bcv", "USD/VES") not in shown and ("bcv", "EUR/VES") in shown


async def test_big_bcv_move_is_suspect_until_the_next_scrape_confirms_it(
    rates_settings, db, make_client, bcv_site, tmp_path
) -> None:
    client = await make_client(rates_settings)
    await scrape(Source.BCV, db, rates_settings)
    bcv_site.bcv_page = dated_page(
        tmp_path, "normal.html", caracas_today(), usd="1.012,45610000"
    )  # +27%

    suspect = await scrape(Source.BCV, db, rates_settings)

    assert (
        suspect.outcome == "suspect"
    )  # EUR and the rest are unchanged, nothing new is published...
    [usd_result] = [r for r in suspect.results if r.pair == "USD/VES"]
    assert usd_result.action == "suspect" and "moved 27.35%" in usd_result.row.reason
    assert (await published_values(client))[
        ("bcv", "USD/VES")
    ] == "794.99170000"  # ...USD not published

    confirmed = await scrape(Source.BCV, db, rates_settings)

    [usd_result] = [r for r in confirmed.results if r.pair == "USD/VES"]
    assert usd_result.action == "confirmed"
    history = await rows(db, "bcv", "USD/VES")
    assert [(row.value, row.status, row.decided_by) for row in history] == [
        (Decimal("1012.45610000"), "confirmed", "scrape"),
        (NORMAL_USD, "accepted", None),
    ]  # the confirmation wrote no third row
    assert (await published_values(client))[("bcv", "USD/VES")] == "1012.45610000"


async def test_big_binance_move_is_confirmed_by_an_agreeing_next_scrape(
    rates_settings, db, make_client
) -> None:
    async with db.transaction():
        await store.insert(
            db,
            source="binance",
            pair="USDT/VES",
            value=Decimal(900),
            effective_date=caracas_today(),
            status="accepted",
            reason="seeded",
        )
    client = await make_client(rates_settings)

    first = await scrape(Source.BINANCE, db, rates_settings)
    assert first.outcome == "suspect" and not first.ok
    assert (await published_values(client))[("binance", "USDT/VES")] == "900"

    second = await scrape(Source.BINANCE, db, rates_settings)
    assert second.outcome == "accepted"
    newest, suspect, seeded = await rows(db, "binance")
    assert (newest.status, suspect.status, suspect.decided_by, seeded.status) == (
        "accepted",
        "confirmed",
        "scrape",
        "accepted",
    )
    assert (await published_values(client))[("binance", "USDT/VES")] == "1148.475"


async def test_unchanged_bcv_page_writes_no_new_row_but_refreshes_the_age(
    rates_settings, db
) -> None:
    await scrape(Source.BCV, db, rates_settings)
    [before] = await rows(db, "bcv", "USD/VES")

    again = await scrape(Source.BCV, db, rates_settings)

    assert again.outcome == "unchanged" and again.ok
    assert {r.action for r in again.results} == {"unchanged"}
    [after] = await rows(db, "bcv", "USD/VES")
    assert after.id == before.id and after.last_seen_at > before.last_seen_at
    assert len(await rows(db, "bcv")) == len(BCV_PAIRS)


async def test_older_effective_date_than_the_published_one_is_rejected(
    rates_settings, db, bcv_site, tmp_path
) -> None:
    bcv_site.bcv_page = dated_page(tmp_path, "normal.html", caracas_today() + timedelta(days=1))
    await scrape(Source.BCV, db, rates_settings)
    bcv_site.bcv_page = dated_page(
        tmp_path, "normal.html", caracas_today(), usd="795,00000000"
    )  # a cached old page

    report = await scrape(Source.BCV, db, rates_settings)

    assert report.outcome == "rejected"
    newest = (await rows(db, "bcv", "USD/VES"))[0]
    assert newest.status == "rejected" and "precedes the published" in newest.reason


# --- failures, stale flag, metrics ----------------------------------------------------------------


def scrapes_counted(outcome: str, source: str) -> float:
    """This process's `colmena_scrape_total` for one outcome and source (the ingress exports it)."""
    labels = {"outcome": outcome, "source": source}
    return REGISTRY.get_sample_value("colmena_scrape_total", labels) or 0.0


async def test_three_failures_make_the_source_stale_with_an_error_log(
    rates_settings, db, make_client, bcv_site, capsys
) -> None:
    await scrape(Source.BCV, db, rates_settings)
    client = await make_client(rates_settings)
    bcv_site.mode = "5xx"
    configure_logging(dev=False, level="INFO")
    capsys.readouterr()
    failed_before = scrapes_counted("http_error", "bcv")

    for attempt in (1, 2):
        report = await scrape(Source.BCV, db, rates_settings)
        assert (report.outcome, report.stale) == ("http_error", False)
        assert (await health(db, "bcv")).consecutive_failures == attempt
    third = await scrape(Source.BCV, db, rates_settings)

    assert third.stale
    state = await health(db, "bcv")
    assert (state.stale, state.consecutive_failures, state.last_outcome) == (True, 3, "http_error")
    logged = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    [stale_line] = [line for line in logged if line["event"] == "rates source stale"]
    assert stale_line["level"] == "error"
    assert (stale_line["source"], stale_line["consecutive_failures"], stale_line["outcome"]) == (
        "bcv",
        3,
        "http_error",
    )
    assert stale_line["last_success_at"] is not None
    body = await (await client.get("/api/v1/rates/latest")).json()
    assert {(r["pair"], r["stale"]) for r in body["rates"]} == {(pair, True) for pair in BCV_PAIRS}
    metrics = await ingress_metrics(client)
    assert 'colmena_rate_source_stale{source="bcv"} 1.0' in metrics
    assert 'colmena_scrape_total{outcome="http_error",source="bcv"}' in metrics
    assert scrapes_counted("http_error", "bcv") == failed_before + 3

    bcv_site.mode = "ok"
    recovered = await scrape(Source.BCV, db, rates_settings)

    assert recovered.outcome == "unchanged"
    assert (await health(db, "bcv")).stale is False
    metrics = await ingress_metrics(client)
    assert 'colmena_rate_source_stale{source="bcv"} 0.0' in metrics


async def test_metrics_show_published_rates_and_their_age(rates_settings, db, make_client) -> None:
    await scrape(Source.BCV, db, rates_settings)
    await scrape(Source.BINANCE, db, rates_settings)
    client = await make_client(rates_settings)

    metrics = await ingress_metrics(client)

    assert 'colmena_rate{pair="USD/VES",source="bcv"} 794.9917' in metrics
    assert 'colmena_rate{pair="USDT/VES",source="binance"} 1148.475' in metrics
    age = next(
        line for line in metrics.splitlines()
        if line.startswith('colmena_rate_age_seconds{pair="USD/VES",source="bcv"}')
    )  # fmt: skip
    assert 0 <= float(age.split()[-1]) < 60


# --- schedule, outbox and the real worker ---------------------------------------------------------


async def test_scheduled_tick_runs_the_actor_on_the_worker_once(
    rates_settings, db, start_worker, bcv_site
) -> None:
    system = start_worker(
        threads=1, settings_override=rates_settings
    )  # one thread: messages run in order
    resources = Resources(
        rates_settings,
        database_url=rates_settings.require_database_url(),
        publisher=AmqpPublisher(rates_settings.require_broker_url(), rates_settings.queue_prefix),
    )
    await resources.start()
    try:
        tick = datetime.now(UTC).replace(second=0, microsecond=0)
        first = await enqueue_scrape(resources, Source.BCV, now=tick + timedelta(seconds=5))
        repeated = await enqueue_scrape(
            resources, Source.BCV, now=tick + timedelta(seconds=20)
        )  # same minute
    finally:
        await resources.close()
    assert first is not None and repeated is None
    await wait_for(
        lambda: db.fetchval("SELECT count(*) = 1 FROM rate_scrapes WHERE source = 'bcv'")
    )

    # The tick's message delivered again (at-least-once) scrapes nothing twice; an on-demand
    # scrape sent after them marks the point where the worker has handled both.
    actor = system.broker.get_actor("scrape_bcv")
    actor.send(tick.isoformat())
    actor.send(tick.isoformat())
    actor.send()
    await wait_for(
        lambda: db.fetchval("SELECT count(*) = 2 FROM rate_scrapes WHERE source = 'bcv'")
    )

    scrapes = await db.fetch(
        "SELECT run_key, outcome FROM rate_scrapes WHERE source = 'bcv' ORDER BY id"
    )
    assert [(r["run_key"], r["outcome"]) for r in scrapes] == [
        (tick.isoformat(), "accepted"),
        (None, "unchanged"),
    ]
    assert len(bcv_site.requests) == 2
    assert {row.pair for row in await rows(db, "bcv")} == BCV_PAIRS
    assert len(await rows(db, "bcv")) == len(BCV_PAIRS)


async def test_worker_publishes_binance_and_a_late_tick_is_skipped(
    rates_settings, db, start_worker, binance_site
) -> None:
    system = start_worker(settings_override=rates_settings)
    late = (datetime.now(UTC) - timedelta(hours=2)).replace(second=0, microsecond=0)

    system.broker.get_actor("scrape_binance").send(late.isoformat())
    system.broker.get_actor("scrape_binance").send()

    await wait_for(
        lambda: db.fetchval("SELECT count(*) = 2 FROM rate_scrapes WHERE source = 'binance'")
    )
    outcomes = {
        r["run_key"]: r["outcome"]
        for r in await db.fetch("SELECT run_key, outcome FROM rate_scrapes")
    }
    assert outcomes == {late.isoformat(): "expired", None: "accepted"}
    assert len(binance_site.requests) == 2  # both sides of the book, for the on-demand scrape only


def test_jobs_are_registered_on_the_caracas_schedules() -> None:
    jobs = {job.name: job for job in all_jobs()}
    monday = datetime(2026, 9, 7, 0, 0, tzinfo=CARACAS)

    bcv_runs = next_run_times(jobs["rates-bcv"].trigger, monday, 2)
    binance_runs = next_run_times(jobs["rates-binance"].trigger, monday, 26)

    assert [run.strftime("%H:%M") for run in bcv_runs] == ["08:00", "13:00"]
    assert (
        binance_runs[0].strftime("%H:%M") == "07:00"
        and binance_runs[24].strftime("%H:%M") == "19:00"
    )
    assert binance_runs[25] == datetime(2026, 9, 8, 7, 0, tzinfo=CARACAS)


# --- the API: validation, pagination, conversions, cache ------------------------------------------


async def seed(db: asyncpg.Connection) -> dict[str, store.RateRow]:
    """Published and unpublished rows, as scrapes would leave them."""
    today = caracas_today()
    specs = [
        ("bcv", "USD/VES", "794.99170000", "accepted"),
        ("bcv", "EUR/VES", "925.66370000", "accepted"),
        ("binance", "USDT/VES", "1148.475", "accepted"),
        ("bcv", "CNY/VES", "111.47210000", "suspect"),
        ("bcv", "TRY/VES", "0.00000001", "rejected"),
    ]
    seeded = {}
    async with db.transaction():
        for source, pair, value, status in specs:
            seeded[pair] = await store.insert(
                db,
                source=source,
                pair=pair,
                value=Decimal(value),
                effective_date=today,
                status=status,
                reason="seeded",
            )
    return seeded


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/v1/rates/latest?x=1", "x"),
        ("/api/v1/rates/history", "pair"),
        ("/api/v1/rates/history?pair=USD-VES", "pair"),
        ("/api/v1/rates/history?pair=USD/VES&source=dolartoday", "source"),
        ("/api/v1/rates/history?pair=USD/VES&from=2026-13-01", "from"),
        ("/api/v1/rates/history?pair=USD/VES&from=20260901", "from"),
        ("/api/v1/rates/history?pair=USD/VES&from=2026-09-02&to=2026-09-01", "from"),
        ("/api/v1/rates/history?pair=USD/VES&limit=0", "limit"),
        ("/api/v1/rates/history?pair=USD/VES&limit=501", "limit"),
        ("/api/v1/rates/history?pair=USD/VES&limit=ten", "limit"),
        ("/api/v1/rates/history?pair=USD/VES&cursor=!!", "cursor"),
        ("/api/v1/rates/history?pair=USD/VES&cursor=YWJj", "cursor"),
        ("/api/v1/rates/history?pair=USD/VES&pair=EUR/VES", "pair"),
        ("/api/v1/rates/history?pair=USD/VES&form=2026-09-01", "form"),
        ("/api/v1/rates/convert?from=USD&to=VES", "amount"),
        ("/api/v1/rates/convert?amount=-1&from=USD&to=VES", "amount"),
        ("/api/v1/rates/convert?amount=1e3&from=USD&to=VES", "amount"),
        ("/api/v1/rates/convert?amount=NaN&from=USD&to=VES", "amount"),
        ("/api/v1/rates/convert?amount=Infinity&from=USD&to=VES", "amount"),
        ("/api/v1/rates/convert?amount=1.123456789&from=USD&to=VES", "amount"),
        ("/api/v1/rates/convert?amount=1&from=US&to=VES", "from"),
        ("/api/v1/rates/convert?amount=1&from=USD", "to"),
        ("/api/v1/rates/convert?amount=1&from=VES&to=ves", "to"),
        ("/api/v1/rates/convert?amount=1&from=USD&to=VES&source=x", "source"),
    ],
)
async def test_bad_parameters_are_400_json_naming_the_parameter(
    client, path: str, parameter: str
) -> None:
    response = await client.get(path)

    assert response.status == 400
    assert response.content_type == "application/json"
    error = (await response.json())["error"]
    assert (error["code"], error["parameter"]) == ("invalid_parameter", parameter)
    assert error["message"]


async def test_history_pages_through_published_values_only(rates_settings, db, make_client) -> None:
    today = caracas_today()
    async with db.transaction():
        for day in range(5):
            for status in ("accepted", "rejected"):
                await store.insert(
                    db,
                    source="bcv",
                    pair="USD/VES",
                    value=Decimal(700 + day),
                    status=status,
                    reason="seeded",
                    effective_date=today - timedelta(days=4 - day),
                )
    client = await make_client(rates_settings)

    seen: list[str] = []
    cursor = None
    while True:
        params = {
            "pair": "usd/ves",
            "source": "bcv",
            "limit": "2",
            **({"cursor": cursor} if cursor else {}),
        }
        page = await (await client.get("/api/v1/rates/history", params=params)).json()
        seen += [item["value"] for item in page["items"]]
        assert {item["status"] for item in page["items"]} <= {"accepted"}
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["704", "703", "702", "701", "700"]

    start, end = (today - timedelta(days=3)).isoformat(), (today - timedelta(days=2)).isoformat()
    window = {"pair": "USD/VES", "from": start, "to": end}
    page = await (await client.get("/api/v1/rates/history", params=window)).json()
    assert [item["value"] for item in page["items"]] == ["702", "701"]


@pytest.mark.parametrize(
    ("amount", "source", "target", "result", "exact"),
    [
        ("100.50", "USD", "VES", "79896.6658500000", True),
        ("0.10", "USD", "VES", "79.4991700000", True),
        ("999999999999999.99999999", "USD", "VES", "794991699999999999.9999920500830000", True),
        ("0", "EUR", "VES", "0.00000000", True),
        ("79499.17", "VES", "USD", "100.00000000", True),
        ("1", "VES", "USD", "0.00125787", False),
        ("1000", "USD", "EUR", "858.83426130", False),
        ("1148.475", "VES", "USDT", "1.00000000", True),
    ],
)
async def test_convert_is_exact_decimal_arithmetic(
    rates_settings, db, make_client, amount, source, target, result, exact
) -> None:
    await seed(db)
    client = await make_client(rates_settings)

    response = await client.get(
        "/api/v1/rates/convert", params={"amount": amount, "from": source, "to": target}
    )

    assert response.status == 200
    body = await response.json()
    assert (body["result"], body["exact"]) == (result, exact)
    assert all(rate["status"] in ("accepted", "confirmed") for rate in body["rates"])


async def test_convert_never_uses_an_unpublished_rate(rates_settings, db, make_client) -> None:
    await seed(db)
    client = await make_client(rates_settings)

    for currency in ("CNY", "TRY", "RUB"):  # suspect, rejected, absent
        response = await client.get(
            "/api/v1/rates/convert", params={"amount": "1", "from": currency, "to": "VES"}
        )
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "rate_not_found"
    shown = await published_values(client)
    assert set(shown) == {("bcv", "USD/VES"), ("bcv", "EUR/VES"), ("binance", "USDT/VES")}


def test_convert_amount_multiplies_exactly_and_rounds_divisions_half_even() -> None:
    assert convert_amount(Decimal("0.1"), Decimal("0.2"), None) == (Decimal("0.02"), True)
    assert convert_amount(Decimal(1), None, Decimal(3)) == (Decimal("0.33333333"), False)
    assert convert_amount(Decimal("0.000000025"), None, Decimal(1)) == (
        Decimal("0.00000002"),
        False,
    )  # half-even


async def test_latest_is_cached_for_a_few_seconds(rates_settings, db, make_client) -> None:
    await seed(db)
    client = await make_client(rates_settings.model_copy(update={"rates_api_cache_s": 60.0}))
    first = await client.get("/api/v1/rates/latest")
    assert first.headers["Cache-Control"] == "public, max-age=60"
    async with db.transaction():
        await store.insert(
            db,
            source="bcv",
            pair="USD/VES",
            value=Decimal("800.00000000"),
            effective_date=caracas_today(),
            status="accepted",
            reason="newer",
        )

    shown = await published_values(client)

    assert shown[("bcv", "USD/VES")] == "794.99170000"


async def test_ttl_cache_expires_and_stays_bounded() -> None:
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        return loads

    now = 1000.0
    cache = TtlCache(ttl_s=5, max_entries=2, clock=lambda: now)
    assert [await cache.get("a", load), await cache.get("a", load)] == [1, 1]
    now += 4.9
    assert await cache.get("a", load) == 1  # still inside the TTL
    now += 0.2
    assert await cache.get("a", load) == 2  # past it
    await cache.get("b", load)
    await cache.get("c", load)
    assert await cache.get("a", load) == 5  # evicted by b and c


# --- the CLI --------------------------------------------------------------------------------------


async def colmena(*args: str, settings: Settings) -> tuple[int, str, str]:
    """Run the real `colmena` command without blocking the loop the stand-ins serve on."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("COLMENA_")}
    env.update(
        COLMENA_DATABASE_URL=settings.require_database_url(),
        COLMENA_BCV_URL=settings.bcv_url,
        COLMENA_BCV_CA_BUNDLE=str(settings.bcv_ca_bundle),
        COLMENA_BINANCE_P2P_URL=settings.binance_p2p_url,
        COLMENA_RATES_BACKOFF_S="0.01",
        COLMENA_RATES_MAX_CHANGE_PCT=str(settings.rates_max_change_pct),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "colmena", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_scrape_prints_what_it_stored_and_refuses_garbage(
    rates_settings, db, bcv_site
) -> None:
    code, out, err = await colmena("rates", "scrape", "bcv", settings=rates_settings)

    assert code == 0, err
    assert f"bcv USD/VES 794.99170000 effective {caracas_today()}: accepted" in out
    assert len(await rows(db, "bcv")) == len(BCV_PAIRS)

    bcv_site.bcv_page = "missing_dolar.html"
    code, out, err = await colmena("rates", "scrape", "bcv", settings=rates_settings)

    assert code == 1
    assert "bcv scrape parse_error: no #dolar inside the official exchange-rate block" in err
    assert "Traceback" not in err
    assert len(await rows(db, "bcv")) == len(BCV_PAIRS)


async def test_cli_binance_scrape_and_list(rates_settings, db) -> None:
    code, out, err = await colmena("rates", "scrape", "binance", settings=rates_settings)
    assert code == 0, err
    assert "binance USDT/VES 1148.475 (buy 1156.25, sell 1140.70)" in out

    code, out, err = await colmena("rates", "list", "--source", "binance", settings=rates_settings)

    assert code == 0, err
    assert "bcv: ok, last success never" in out
    assert "binance: ok, last success 20" in out
    assert "USDT/VES 1148.475" in out and ": accepted (" in out


async def test_operator_accepts_a_suspect_through_the_cli(
    rates_settings, db, make_client, bcv_site, tmp_path
) -> None:
    await scrape(Source.BCV, db, rates_settings)
    bcv_site.bcv_page = dated_page(tmp_path, "normal.html", caracas_today(), usd="1.012,45610000")
    code, out, err = await colmena("rates", "scrape", "bcv", settings=rates_settings)
    assert code == 1  # held back: nothing new was published
    assert "bcv scrape suspect: USD/VES: moved 27.35%" in err
    [suspect, _] = await rows(db, "bcv", "USD/VES")
    assert suspect.status == "suspect"
    assert f"`colmena rates accept {suspect.id}` publishes it" in out
    client = await make_client(rates_settings)
    assert (await published_values(client))[("bcv", "USD/VES")] == "794.99170000"

    code, out, err = await colmena("rates", "accept", str(suspect.id), settings=rates_settings)

    assert code == 0, err
    assert "published (confirmed)" in out
    [accepted, _] = await rows(db, "bcv", "USD/VES")
    assert (accepted.status, accepted.decided_by) == ("confirmed", "operator")
    assert (await published_values(client))[("bcv", "USD/VES")] == "1012.45610000"
    code, out, _ = await colmena("rates", "accept", str(suspect.id), settings=rates_settings)
    assert code == 0 and "already published" in out


async def test_cli_accept_refuses_rejected_outdated_and_unknown_rates(rates_settings, db) -> None:
    seeded = await seed(db)
    async with db.transaction():
        outdated = await store.insert(
            db,
            source="bcv",
            pair="EUR/VES",
            value=Decimal(2000),
            effective_date=caracas_today(),
            status="suspect",
            reason="seeded",
        )
        await store.insert(
            db,
            source="bcv",
            pair="EUR/VES",
            value=Decimal(930),
            effective_date=caracas_today(),
            status="accepted",
            reason="newer",
        )

    for rate_id, message in [
        (seeded["TRY/VES"].id, "rejected values are never published"),
        (outdated.id, "was published after it"),
        (999999, "no rate #999999"),
    ]:
        code, _, err = await colmena("rates", "accept", str(rate_id), settings=rates_settings)
        assert code == 1 and message in err, err
    assert {row.status for row in await rows(db, "bcv", "EUR/VES")} == {"suspect", "accepted"}


# --- alert rules ----------------------------------------------------------------------------------


def test_alert_rules_fire_only_inside_their_windows() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, (
        "promtool is needed (Debian's prometheus package; .ci/run installs it)"
    )
    rules = Path(__file__).resolve().parent.parent / "ops" / "prometheus" / "rules"

    result = subprocess.run(
        [promtool, "test", "rules", "rates_test.yml"],
        cwd=rules,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_bounds_setting_is_validated() -> None:
    with pytest.raises(SettingsError, match="COLMENA_RATES_BOUNDS"):
        load_settings(rates_bounds={"USD/VES": ["100", "1"]}, _env_file=None)
