"""Fuzzing the public rates API with random query strings: never a 5xx, nothing stored, and
every refusal is the documented 400 `invalid_parameter` naming the parameter.

The oracle for "must be refused" is the parameter rules the API documents, written out here
(`_refused`), not the route's own parsers: a query they refuse must be a 400 naming one of the
parameters they refuse, and a query they accept must never be a 400.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import Counter
from datetime import date
from decimal import Decimal
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from colmena.store import rates as store
from tests.fuzz_support import (
    FUZZ,
    Answer,
    capture_logs,
    configured_secrets,
    fuzz_settings,
    make_target,
)

SOURCES = ("bcv", "binance")
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


# The documented rules, one per parameter: pairs and currency codes are case-insensitive and
# forgive surrounding spaces; amounts are plain decimals (any Unicode decimal digit counts, as
# Python's Decimal reads it) of at most 15 digits and 8 decimals; dates are ISO YYYY-MM-DD; limit
# is an ASCII integer from 1 to 500; a cursor is the unpadded base64url of a positive row id.
def _pair_ok(value: str) -> bool:
    return re.fullmatch(r"[A-Z]{3,5}/[A-Z]{3,5}", value.strip().upper()) is not None


def _currency_ok(value: str) -> bool:
    return re.fullmatch(r"[A-Z]{3,5}", value.strip().upper()) is not None


def _amount_ok(value: str) -> bool:
    whole, dot, decimals = value.strip().partition(".")
    return (
        1 <= len(whole) <= 15
        and whole.isdecimal()
        and (not dot or (1 <= len(decimals) <= 8 and decimals.isdecimal()))
    )


def _date(value: str) -> date | None:
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value) is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _limit_ok(value: str) -> bool:
    return value.isascii() and value.isdigit() and 1 <= int(value) <= 500


def _cursor_ok(value: str) -> bool:
    if re.fullmatch(r"[A-Za-z0-9_-]{1,24}", value) is None:
        return False
    try:
        decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    return decoded.isdigit() and int(decoded) >= 1


def _refused(route: str, params: dict[str, str]) -> set[str]:
    """The parameters the documented rules refuse in this query (empty: it must be answered)."""
    bad = {name for name in params if name not in ROUTES[route]}
    if route == "/api/v1/rates/history":
        if not _pair_ok(params.get("pair", "")):
            bad.add("pair")
        start, end = (_date(params[name]) if name in params else None for name in ("from", "to"))
        bad |= {name for name in ("from", "to") if name in params and _date(params[name]) is None}
        if start and end and start > end:
            bad.add("from")
        if "limit" in params and not _limit_ok(params["limit"]):
            bad.add("limit")
        if "cursor" in params and not _cursor_ok(params["cursor"]):
            bad.add("cursor")
    if route == "/api/v1/rates/convert":
        if not _amount_ok(params.get("amount", "")):
            bad.add("amount")
        codes = {name: params.get(name, "") for name in ("from", "to")}
        bad |= {name for name, code in codes.items() if not _currency_ok(code)}
        if all(_currency_ok(code) for code in codes.values()) and (
            codes["from"].strip().upper() == codes["to"].strip().upper()
        ):
            bad.add("to")
    if "source" in params and params["source"] not in SOURCES:
        bad.add("source")
    return bad


def _named_parameter(answer: Answer) -> str:
    """The parameter a 400 names, from its JSON body."""
    body = json.loads(answer.text.split("\n\n", 1)[1])
    assert body["error"]["code"] == "invalid_parameter", answer.text[:300]
    return body["error"]["parameter"]


def _check_refusal(answer: Answer, refused: set[str]) -> None:
    """A query the rules refuse is a 400 naming one of the refused parameters; any other query
    is answered (200, or 404 when no rate is published for it)."""
    if refused:
        assert answer.status == 400, f"refused {sorted(refused)}: {answer.text[:300]}"
        assert _named_parameter(answer) in refused, answer.text[:300]
    else:
        assert answer.status in (200, 404), answer.text[:300]


@FUZZ
@given(route=st.sampled_from(sorted(ROUTES)), pairs=st.lists(st.tuples(names, values), max_size=6))
async def test_random_query_strings_are_answered_or_refused_cleanly(web, route, pairs) -> None:
    await web.start()
    query = "&".join(f"{_encode(name)}={_encode(value)}" for name, value in pairs)
    answer = await web.send("GET", f"{route}?{query}" if query else route)
    await web.finish(answer, changes_nothing=True, what="a rates API read")
    assert answer.status in (200, 400, 404), answer.text[:300]
    if answer.status == 400:
        _named_parameter(answer)
    names = Counter(name for name, _ in pairs)
    unknown = {name for name in names if name not in ROUTES[route]}
    repeated = {name for name, count in names.items() if count > 1}
    if unknown or repeated:  # refused whatever the values
        assert answer.status == 400, answer.text[:300]


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
@example(case=("/api/v1/rates/convert", {"amount": "١٢"}))  # Arabic-Indic digits: answered
async def test_bad_parameters_among_valid_ones_are_refused_cleanly(web, case) -> None:
    route, changed = case
    params = {**VALID[route], **changed}
    refused = _refused(route, params)
    await web.start()
    query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in params.items())
    answer = await web.send("GET", f"{route}?{query}")
    await web.finish(answer, refused=bool(refused), changes_nothing=True, what="a rates API read")
    _check_refusal(answer, refused)


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
    refused = _refused("/api/v1/rates/convert", params)
    answer = await web.send("GET", f"/api/v1/rates/convert?{query}")
    await web.finish(answer, refused=bool(refused), changes_nothing=True, what="a conversion")
    _check_refusal(answer, refused)
