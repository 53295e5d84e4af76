"""Fuzzing the public rates API with random query strings: never a 5xx, nothing stored, and
every refusal is the documented 400 `invalid_parameter` naming the parameter."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from colmena.store import rates as store
from tests.fuzz_support import (
    FUZZ,
    capture_logs,
    configured_secrets,
    fuzz_settings,
    make_target,
)

ROUTES = {
    "/api/v1/rates/latest": [],
    "/api/v1/rates/history": ["pair", "source", "from", "to", "limit", "cursor"],
    "/api/v1/rates/convert": ["amount", "from", "to", "source"],
}
PUBLISHED = [
    ("bcv", "USD/VES", Decimal("36.51230000")),
    ("bcv", "EUR/VES", Decimal("39.87654321")),
    ("binance", "USDT/VES", Decimal("38.10000000")),
]

# Values near the valid ones (so the parsers get past their first check) and odd ones: unicode
# digits, signs, exponents, huge numbers, control and surrogate-escaped characters.
tricky = st.sampled_from(["²", "١٢", "０", "𝟙", "³", "\x00", "\udcff", " 1", "1 ", "+1"])
near_valid = st.sampled_from(
    [
        "USD/VES",
        "usd/ves",
        "USDT/VES",
        "EUR",
        "VES",
        "USD",
        "USDT",
        "bcv",
        "binance",
        "BCV",
        "2026-09-01",
        "2026-02-30",
        "9999-12-31",
        "0001-01-01",
        "1",
        "500",
        "501",
        "0",
        "-1",
        "²",
        "١٢",
        "1e3",
        "100.50",
        "0.00000001",
        "999999999999999.99999999",
        "1" * 40,
        "NaN",
        "Infinity",
        "MQ",
        "AAAAAAAAAAAAAAAAAAAAAAAA",
        "=",
        " ",
        "%",
        "\x00",
        "\udcff",
        "🙂",
    ]
)
values = tricky | near_valid | st.text(max_size=30)
names = st.sampled_from(sorted({n for allowed in ROUTES.values() for n in allowed})) | st.text(
    max_size=10
)


@pytest.fixture
async def web(settings, make_client, db):
    for source, pair, value in PUBLISHED:
        await store.insert(
            db,
            source=source,
            pair=pair,
            value=value,
            effective_date=date(2026, 9, 1),
            status="accepted",
            reason="fuzz seed",
        )
    active = fuzz_settings(settings, rates_api_cache_s=0)
    with capture_logs() as logs:
        yield await make_target(await make_client(active), db, configured_secrets(active), logs)


def _encode(text: str) -> str:
    return quote(text.encode("utf-8", "surrogateescape"), safe="")


@FUZZ
@given(route=st.sampled_from(sorted(ROUTES)), pairs=st.lists(st.tuples(names, values), max_size=6))
async def test_random_query_strings_are_answered_or_refused_cleanly(web, route, pairs) -> None:
    await web.start()
    query = "&".join(f"{_encode(name)}={_encode(value)}" for name, value in pairs)
    answer = await web.send("GET", f"{route}?{query}" if query else route)
    await web.finish(answer, refused=True, what="a rates API read")
    assert answer.status in (200, 400, 404), answer.text[:300]
    if answer.status == 400:
        assert '"invalid_parameter"' in answer.text and '"parameter"' in answer.text, answer.text[
            :300
        ]


VALID = {
    "/api/v1/rates/history": {
        "pair": "USD/VES",
        "source": "bcv",
        "from": "2026-08-01",
        "to": "2026-09-30",
        "limit": "10",
        "cursor": "MTAw",
    },
    "/api/v1/rates/convert": {"amount": "100.50", "from": "USD", "to": "VES", "source": "bcv"},
}


cases = st.one_of(
    [
        st.tuples(
            st.just(route),
            st.dictionaries(st.sampled_from(sorted(params)), values, min_size=1, max_size=2),
        )
        for route, params in VALID.items()
    ]
)


@FUZZ
@given(case=cases)
@example(case=("/api/v1/rates/history", {"limit": "²"}))  # found by this test: was a 500
async def test_bad_parameters_among_valid_ones_are_refused_cleanly(web, case) -> None:
    route, bad = case
    params = {**VALID[route], **bad}
    await web.start()
    query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in params.items())
    answer = await web.send("GET", f"{route}?{query}")
    await web.finish(answer, refused=True, what="a rates API read")
    assert answer.status in (200, 400, 404), answer.text[:300]


@FUZZ
@given(
    amount=st.decimals(
        min_value=0, max_value=Decimal("999999999999999"), places=8, allow_nan=False
    ).map(str)
    | values,
    source_currency=st.sampled_from(["USD", "EUR", "USDT", "VES", "CNY"]),
    target_currency=st.sampled_from(["USD", "EUR", "USDT", "VES", "CNY"]),
    source=st.none() | st.sampled_from(["bcv", "binance"]),
)
async def test_random_conversions_never_fail_on_the_server(
    web, amount, source_currency, target_currency, source
) -> None:
    await web.start()
    params = {"amount": amount, "from": source_currency, "to": target_currency}
    if source:
        params["source"] = source
    query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in params.items())
    answer = await web.send("GET", f"/api/v1/rates/convert?{query}")
    await web.finish(answer, refused=True, what="a conversion")
    assert answer.status in (200, 400, 404), answer.text[:300]
