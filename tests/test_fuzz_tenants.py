"""Fuzzing the tenant API and the admin routes: random, missing, forged and near-miss tokens
(as text and as raw bytes) change nothing and are 401; with a real token, random bodies, ids and
query strings are answered or refused cleanly; tokens and provider keys never come back out.

The process runtime is used (no bot is ever started here: no worker runs the commands), so no
log line is ever shipped and a logs request answers 404.
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from colmena.supervisor.runtimes import close_runtimes
from tests.bots_support import ADMIN_TOKEN, add_tenant, bot_settings
from tests.fuzz_support import (
    FUZZ,
    capture_logs,
    configured_secrets,
    fuzz_settings,
    make_target,
)

TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# What an HTTP client library will put in a header (raw bytes go through send_raw).
PRINTABLE_LATIN1 = st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f")
TENANT_ROUTES = [
    ("POST", "/api/v1/bot/start"),
    ("POST", "/api/v1/bot/stop"),
    ("POST", "/api/v1/bot/restart"),
    ("GET", "/api/v1/bot/status"),
    ("GET", "/api/v1/bot/config"),
    ("PUT", "/api/v1/bot/config"),
    ("GET", "/api/v1/bot/logs"),
    ("GET", "/api/v1/bot/logs/stream"),
    ("GET", "/api/v1/commands/{id}"),
    ("GET", "/api/v1/keys"),
    ("POST", "/api/v1/keys"),
    ("DELETE", "/api/v1/keys/{id}"),
]
ADMIN_ROUTES = [("GET", "/api/v1/admin/bots"), ("POST", "/api/v1/admin/bots/{id}/stop")]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(
        ["BTCUSDT", "paper", "live", "1000.50", "0", "-1", "1e9", "²", "\x00", "binance"]
    )
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.sampled_from(["symbols", "mode", "capital", "provider", "key", "extra"])
            | st.text(max_size=8),
            inner,
            max_size=5,
        )
    ),
    max_leaves=15,
)
bodies = (
    json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=80)
    | st.builds(
        lambda s, m, c: json.dumps({"symbols": s, "mode": m, "capital": c}).encode(),
        st.lists(st.sampled_from(["BTCUSDT", "ETHUSDT", "btc", "", "X" * 21]), max_size=6),
        st.sampled_from(["paper", "live", "LIVE", ""]),
        st.sampled_from(["1000.50", "0", "0.000000001", "1" * 13, 5, "abc"]),
    )
)


@pytest.fixture
async def web(settings, tmp_path, make_client, db):
    active = fuzz_settings(
        bot_settings(settings, tmp_path, "process", None, bot_sse_max_seconds=1.0)
    )
    tenant_id, token = await add_tenant(db)
    other_id, other_token = await add_tenant(db, plan="pro")
    with capture_logs() as logs:
        target = await make_target(
            await make_client(active), db, [*configured_secrets(active), token, other_token], logs
        )
        target.tenant_id, target.token, target.other_id = tenant_id, token, other_id  # type: ignore[attr-defined]
        yield target
    close_runtimes()


def _fill(template: str, value: str) -> str:
    return template.replace("{id}", quote(value.encode("utf-8", "surrogateescape"), safe="") or "x")


@st.composite
def forged_authorization(draw: st.DrawFn, token: str) -> str | None:
    """No header, another scheme, a random token, or a near miss of the real one or the admin's."""
    kind = draw(
        st.sampled_from(["none", "scheme", "random", "near", "admin_near", "shape", "empty"])
    )
    if kind == "none":
        return None
    if kind == "empty":
        return draw(st.sampled_from(["", "Bearer", "Bearer ", "bearer  ", " Bearer x"]))
    if kind == "scheme":
        return draw(st.sampled_from(["Basic", "Token", "Digest", "bearer:"])) + " " + token
    if kind == "random":
        return "Bearer " + draw(st.text(PRINTABLE_LATIN1, min_size=1, max_size=80))
    if kind == "shape":
        return "Bearer cmt_" + draw(
            st.text(st.sampled_from(TOKEN_ALPHABET), min_size=43, max_size=43)
        )
    base = token if kind == "near" else ADMIN_TOKEN
    at = draw(st.integers(0, len(base) - 1))
    change = draw(st.sampled_from(["flip", "drop", "append", "case"]))
    if change == "flip":
        near = (
            base[:at]
            + draw(st.sampled_from(TOKEN_ALPHABET).filter(lambda c: c != base[at]))
            + base[at + 1 :]
        )
    elif change == "drop":
        near = base[:at] + base[at + 1 :]
    elif change == "append":
        near = base + draw(st.sampled_from(TOKEN_ALPHABET))
    else:
        near = base.swapcase()
    assume(near != base)
    return "Bearer " + near


@FUZZ
@given(
    data=st.data(),
    route=st.sampled_from(TENANT_ROUTES + ADMIN_ROUTES),
    path_value=st.text(max_size=40),
    body=bodies,
    query=st.sampled_from(["", "?tail=5", "?tail=²", "?tail=-1", "?x=1"]),
)
async def test_forged_or_missing_tokens_are_401_and_change_nothing(
    web, data, route, path_value, body, query
) -> None:
    authorization = data.draw(forged_authorization(web.token), label="authorization")
    method, template = route
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    await web.start()
    answer = await web.send(method, _fill(template, path_value) + query, data=body, headers=headers)
    await web.finish(answer, refused=True, what="a request with a forged token")
    unroutable = (
        answer.status == 404 and "{id}" in template and '"message": "Not Found"' in answer.text
    )
    assert answer.status == 401 or unroutable, answer.text[
        :300
    ]  # the router's 404: the segment cannot match


@FUZZ
@given(
    route=st.sampled_from(TENANT_ROUTES + ADMIN_ROUTES),
    value=st.binary(max_size=70),
    prefix=st.sampled_from([b"Bearer ", b"Bearer cmt_", b"", b"Basic "]),
)
@example(
    route=("GET", "/api/v1/admin/bots"), value=b"\x80", prefix=b"Bearer "
)  # found here: were 500s
@example(
    route=("POST", "/api/v1/bot/start"), value=b"\x80", prefix=b"Bearer "
)  # (digest of non-UTF-8)
async def test_raw_authorization_bytes_are_401_and_change_nothing(
    web, route, value, prefix
) -> None:
    method, template = route
    clean = bytes(b for b in value if b not in b"\r\n")
    await web.start()
    head = (
        method.encode() + b" " + _fill(template, "x").encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Connection: close\r\nContent-Length: 0\r\nAuthorization: " + prefix + clean + b"\r\n"
    )
    answer = await web.send_raw(head)
    await web.finish(answer, refused=True, what="a request with a raw Authorization header")
    assert answer.status in (400, 401), answer.text[:300]


@FUZZ
@given(
    route=st.sampled_from(TENANT_ROUTES),
    path_value=st.text(max_size=40) | st.uuids().map(str),
    body=bodies,
    query=st.lists(
        st.tuples(st.sampled_from(["tail", "x", "tail"]), st.text(max_size=8)), max_size=3
    ),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded"]
    ),
)
@example(
    route=("GET", "/api/v1/bot/logs"),
    path_value="",
    body=b"",
    query=[("tail", "²")],  # found here: 500
    content_type="application/json",
)
@example(
    route=("DELETE", "/api/v1/keys/{id}"),
    path_value="\x00",
    body=b"",
    query=[],  # found here: 500
    content_type="application/json",
)
@example(
    route=("PUT", "/api/v1/bot/config"),
    path_value="",
    body=b"[" * 100_000,
    query=[],
    content_type="application/json",
)
async def test_authenticated_random_requests_are_answered_or_refused_cleanly(
    web, route, path_value, body, query, content_type
) -> None:
    method, template = route
    query_string = "&".join(
        f"{quote(k)}={quote(v.encode('utf-8', 'surrogateescape'), safe='')}" for k, v in query
    )
    path = _fill(template, path_value) + (f"?{query_string}" if query_string else "")
    await web.start()
    answer = await web.send(
        method,
        path,
        data=body,
        headers={"Authorization": f"Bearer {web.token}", "Content-Type": content_type},
    )
    await web.finish(answer, what="a refused tenant request")
    assert answer.status in (200, 201, 202, 204, 400, 404, 405, 422), answer.text[:300]


@FUZZ
@given(
    provider=st.sampled_from(["binance", "bybit_2", "kraken"]) | st.text(max_size=12),
    extra=st.dictionaries(
        st.sampled_from(["provider", "key", "note", "kind"]), json_scalars, max_size=2
    ),
)
async def test_provider_keys_never_come_back_out(web, provider, extra) -> None:
    key = "sk-fuzz-" + uuid.uuid4().hex  # the plaintext: it must never be seen again
    await web.start()
    web.secrets.append(key)
    try:
        body = {"provider": provider, "key": key, **{k: v for k, v in extra.items() if k != "key"}}
        headers = {"Authorization": f"Bearer {web.token}", "Content-Type": "application/json"}
        stored = await web.send("POST", "/api/v1/keys", data=json.dumps(body), headers=headers)
        await web.finish(stored, what="a refused provider key")
        assert stored.status in (201, 422), stored.text[:300]
        for method, path in (
            ("GET", "/api/v1/keys"),
            ("DELETE", f"/api/v1/keys/{quote(provider, safe='') or 'x'}"),
        ):
            await web.start()
            await web.finish(await web.send(method, path, headers=headers))
    finally:
        web.secrets.remove(key)


@FUZZ
@given(tenant=st.text(max_size=70), body=bodies)
@example(tenant="\x00", body=b"")  # found by this test: was a 500 (NUL reached PostgreSQL)
async def test_admin_stop_with_random_tenants_is_clean(web, tenant, body) -> None:
    assume(tenant not in (web.tenant_id, web.other_id))
    await web.start()
    answer = await web.send(
        "POST",
        _fill("/api/v1/admin/bots/{id}/stop", tenant),
        data=body,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    await web.finish(answer, refused=True, what="an admin stop of an unknown tenant")
    assert answer.status == 404, answer.text[:300]
