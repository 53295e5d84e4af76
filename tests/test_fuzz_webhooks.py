"""Fuzzing the webhooks: valid signed requests mutated byte-wise, header-wise and query-wise, and
signed garbage. Unverified requests and garbage are a 4xx that stores nothing; nothing answers
5xx; no secret leaks.

The oracle for "verified" is the provider's own scheme computed here from the secret (Stripe's
library, Mercado Pago's manifest HMAC), not the route; the oracle for "garbage" is the shape each
provider documents plus what PostgreSQL's jsonb can hold. A request these oracles refuse must be
answered 4xx and leave every table as it was.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
import uuid
from typing import Any
from urllib.parse import quote

import pytest
import stripe as stripe_sdk
from hypothesis import assume, example, given
from hypothesis import strategies as st

from colmena.gateways import mercadopago, stripe
from colmena.gateways import sample_events as events
from tests.fuzz_support import (
    FUZZ,
    MP_SECRET,
    STRIPE_OLD_SECRET,
    STRIPE_SECRET,
    capture_logs,
    configured_secrets,
    fuzz_settings,
    make_target,
)

STRIPE = "/webhooks/stripe"
MERCADOPAGO = "/webhooks/mercadopago"

# Header values an HTTP client library can send (no CR/LF, latin-1); raw bytes go through
# raw_request.
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80
)
query_pairs = st.lists(st.tuples(st.text(max_size=12), st.text(max_size=40)), max_size=4)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "application/json; charset=latin-1",
        "multipart/form-data; boundary=x",
    ]
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["\x00", "a\x00b", "\ud800", "\udfff", "evt_\x00", "\u2028"])
)
# Nesting deeper than Python's recursion limit: json.loads raises RecursionError, not ValueError.
deep_json = st.integers(1_000, 100_000).map(lambda n: b'{"data": ' + b"[" * n + b"]" * n + b"}")
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture
async def web(settings, make_client, db):
    active = fuzz_settings(settings)
    with capture_logs() as logs:
        yield await make_target(await make_client(active), db, configured_secrets(active), logs)


def _query(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


def _path(base: str, pairs: list[tuple[str, str]]) -> str:
    return f"{base}?{_query(pairs)}" if pairs else base


def _stripe_verified(body: bytes, header: str | None) -> bool:
    """Stripe's own check, with every secret the app knows, and no timestamp more than the
    tolerance ahead either (the library only looks back)."""
    if not header:
        return False
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    for secret in (STRIPE_SECRET, STRIPE_OLD_SECRET):
        try:
            stripe_sdk.WebhookSignature.verify_header(text, header, secret, 300)
        except Exception:
            continue
        pairs = [item.split("=", 2) for item in header.split(",")]
        signed_at = int(next(pair[1] for pair in pairs if pair[0] == "t"))  # as Stripe reads it
        return signed_at <= time.time() + 300
    return False


def _jsonb_storable(value: Any) -> bool:
    """Whether PostgreSQL's jsonb holds this parsed JSON: no NaN or Infinity, and no NUL or
    unpaired surrogate in any string or key."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return all(_jsonb_storable(item) for item in value)
    if isinstance(value, dict):
        return all(_jsonb_storable(k) and _jsonb_storable(v) for k, v in value.items())
    return True


def _parsed(body: bytes) -> Any:
    """The body as JSON, or None when it is not JSON (or nests deeper than Python parses)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _stripe_event_well_formed(body: bytes) -> bool:
    """What Stripe documents of every event and colmena relies on: an object with an `evt_` id
    (at most 255 characters), a type, an integer `created` (JSON `true` is one to Python, and is
    taken) and a `data.object`, holding only values jsonb can store."""
    event = _parsed(body)
    if not isinstance(event, dict):
        return False
    event_id, data = event.get("id"), event.get("data")
    try:
        storable = _jsonb_storable(event)
    except RecursionError:
        storable = False
    return (
        isinstance(event_id, str)
        and event_id.startswith("evt_")
        and len(event_id) <= 255
        and isinstance(event.get("type"), str)
        and bool(event["type"])
        and isinstance(event.get("created"), int)
        and isinstance(data, dict)
        and isinstance(data.get("object"), dict)
        and storable
    )


def _mercadopago_notification_well_formed(body: bytes, data_id: str) -> bool:
    """A notification object with a type and a `data` object whose id is the signed data.id
    (as sent or lowercased, as the signature check allows), holding only storable values."""
    notification = _parsed(body)
    if not isinstance(notification, dict):
        return False
    data = notification.get("data")
    try:
        storable = _jsonb_storable(notification)
    except RecursionError:
        storable = False
    return (
        isinstance(data, dict)
        and data.get("id") is not None
        and str(data["id"]) in (data_id, data_id.lower())
        and isinstance(notification.get("type"), str)
        and bool(notification["type"])
        and storable
    )


def _mercadopago_verified(
    x_signature: str | None, x_request_id: str | None, data_id: str | None
) -> bool:
    """The manifest HMAC Mercado Pago documents, computed from the secret; ts within 300 s."""
    if not x_signature or x_request_id is None or data_id is None:
        return False
    parts = dict(part.strip().partition("=")[::2] for part in x_signature.split(","))
    ts, v1 = parts.get("ts", ""), parts.get("v1", "")
    if not ts.isascii() or not ts.isdigit():
        return False
    seconds = int(ts) / 1000 if len(ts) >= 13 else int(ts)
    if abs(time.time() - seconds) > 300:
        return False
    for candidate in {data_id, data_id.lower()}:
        manifest = f"id:{candidate};request-id:{x_request_id};ts:{ts};"
        expected = hmac.new(MP_SECRET.encode(), manifest.encode(), hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected.encode(), v1.encode("utf-8", "surrogateescape")):
            return True
    return False


# Mutations ---------------------------------------------------------------------------------------


@st.composite
def mutated_bytes(draw: st.DrawFn, original: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "replace", "keep"]))
    if kind == "keep" or not original:
        return original
    at = draw(st.integers(0, len(original) - 1))
    if kind == "flip":
        return (
            original[:at] + bytes([original[at] ^ draw(st.integers(1, 255))]) + original[at + 1 :]
        )
    if kind == "insert":
        return original[:at] + draw(st.binary(min_size=1, max_size=8)) + original[at:]
    if kind == "delete":
        return original[:at] + original[at + draw(st.integers(1, 16)) :]
    if kind == "truncate":
        return original[:at]
    return draw(st.binary(max_size=200))


@st.composite
def mutated_text(draw: st.DrawFn, original: str) -> str | None:
    kind = draw(
        st.sampled_from(["keep", "drop", "flip", "append", "prefix", "replace", "truncate"])
    )
    if kind == "keep":
        return original
    if kind == "drop":
        return None
    if kind == "replace":
        return draw(header_text)
    if kind == "append":
        return original + draw(header_text)
    if kind == "prefix":
        return draw(header_text) + original
    if not original:
        return original
    at = draw(st.integers(0, len(original) - 1))
    if kind == "truncate":
        return original[:at]
    return original[:at] + draw(header_text.filter(bool).map(lambda s: s[0])) + original[at + 1 :]


# Stripe ------------------------------------------------------------------------------------------


@st.composite
def stripe_requests(draw: st.DrawFn) -> dict[str, Any]:
    event = events.stripe_event("payment_intent.succeeded", events.payment_intent())
    body = json.dumps(event).encode()
    age = draw(st.sampled_from([0, 0, 0, 299, 301, -301, 10**6]))
    signature = stripe.sign(
        body.decode(),
        draw(st.sampled_from([STRIPE_SECRET, STRIPE_OLD_SECRET, "whsec_x"])),
        int(time.time()) - age,
    )
    headers: dict[str, str] = {"Content-Type": draw(content_types)}
    new_signature = draw(mutated_text(signature))
    if new_signature is not None:
        headers["Stripe-Signature"] = new_signature
    headers.update(
        draw(
            st.dictionaries(
                st.sampled_from(
                    [
                        "X-Forwarded-For",
                        "User-Agent",
                        "Stripe-Signature",
                        "Content-Encoding",
                        "X-Request-Id",
                    ]
                ),
                header_text,
                max_size=2,
            )
        )
    )
    return {"body": draw(mutated_bytes(body)), "headers": headers, "query": draw(query_pairs)}


def _event_body(**changes: Any) -> bytes:
    event = events.stripe_event("payment_intent.succeeded", events.payment_intent())
    return json.dumps({**event, **changes}).encode()


@FUZZ
@given(sent=stripe_requests())
@example(
    sent={
        "body": _event_body(),
        "query": [],  # found by this test: was a 500 (TypeError in Stripe's compare)
        "headers": {"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=\xe9"},
    }
)
async def test_mutated_stripe_webhooks_store_nothing_unless_verified(web, sent) -> None:
    await web.start()
    answer = await web.send(
        "POST", _path(STRIPE, sent["query"]), data=sent["body"], headers=sent["headers"]
    )
    content_type = sent["headers"]["Content-Type"].split(";")[0]
    verified = content_type == "application/json" and _stripe_verified(
        sent["body"], sent["headers"].get("Stripe-Signature")
    )
    await web.finish(answer, refused=not verified, what="an unverified Stripe webhook")
    if not verified:
        assert answer.status in (400, 401, 415), answer.text[:300]
    elif "Content-Encoding" not in sent["headers"]:  # the signed body is the original event
        assert answer.status == 200, answer.text[:300]


@st.composite
def signed_stripe_garbage(draw: st.DrawFn) -> bytes:
    """Bodies with a valid signature: JSON of any shape, near-events with odd values, or bytes;
    never a well-formed event (a draw that happens to be one is discarded)."""
    event = events.stripe_event("payment_intent.succeeded", events.payment_intent())
    shape = draw(st.sampled_from(["event", "value", "bytes", "deep"]))
    if shape == "bytes":
        return draw(st.binary(max_size=200))
    if shape == "deep":
        return draw(deep_json)
    if shape == "value":
        return json.dumps(draw(json_values)).encode()
    if draw(st.booleans()):
        event["data"]["object"]["metadata"] = draw(
            st.dictionaries(st.text(max_size=8), json_scalars, max_size=3)
        )
    for key in draw(
        st.lists(st.sampled_from(["id", "type", "created", "data", "object"]), max_size=3)
    ):
        event[key] = draw(json_values)
    if draw(st.booleans()):
        event["id"] = "evt_" + draw(st.text(max_size=20))
    body = json.dumps(event).encode()
    assume(not _stripe_event_well_formed(body))
    return body


@FUZZ
@given(body=signed_stripe_garbage())
@example(
    body=_event_body(livemode=float("inf"))
)  # found by this test: were 503s (jsonb refused them)
@example(body=_event_body(livemode=123.25).replace(b"123.25", b"1e400"))  # jsonb keeps it
@example(body=_event_body(livemode="\x00"))
@example(body=_event_body(livemode="\ud800"))
@example(body=b'{"data": ' + b"[" * 5000 + b"]" * 5000 + b"}")  # was a 500 (RecursionError)
async def test_signed_stripe_garbage_is_a_4xx_that_changes_nothing(web, body) -> None:
    await web.start()
    try:
        signature = stripe.sign(body.decode("utf-8"), STRIPE_SECRET)
    except UnicodeDecodeError:
        signature = "t=1,v1=" + "0" * 64
    answer = await web.send(
        "POST",
        STRIPE,
        data=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": signature},
    )
    await web.finish(answer, refused=True, what="a refused signed Stripe webhook")


# Mercado Pago ------------------------------------------------------------------------------------


@st.composite
def mercadopago_requests(draw: st.DrawFn) -> dict[str, Any]:
    payment_id = str(draw(st.integers(1, 10**12)))
    notification = events.mercadopago_notification(payment_id)
    request_id = str(uuid.uuid4())
    age = draw(st.sampled_from([0, 0, 0, 299, 301, -4000]))
    ts = int(time.time()) - age
    secret = draw(st.sampled_from([MP_SECRET, MP_SECRET, "not-ours"]))
    signature = mercadopago.sign(data_id=payment_id, request_id=request_id, secret=secret, ts=ts)
    headers: dict[str, str] = {"Content-Type": draw(content_types)}
    for name, value in (("x-signature", signature), ("x-request-id", request_id)):
        mutated = draw(mutated_text(value))
        if mutated is not None:
            headers[name] = mutated
    query = [("data.id", payment_id), ("type", "payment")]
    mutation = draw(st.sampled_from(["keep", "keep", "drop", "change", "repeat", "extra"]))
    if mutation == "drop":
        query = query[1:]
    elif mutation == "change":
        query[0] = ("data.id", draw(mutated_text(payment_id)) or "")
    elif mutation == "repeat":
        query.insert(0, ("data.id", draw(st.text(max_size=12))))
    elif mutation == "extra":
        query += draw(query_pairs)
    return {
        "body": draw(mutated_bytes(json.dumps(notification).encode())),
        "headers": headers,
        "query": query,
    }


def _mercadopago_signed(
    data_id: str, request_id: str, ts: str, body: bytes | None = None
) -> dict[str, Any]:
    manifest = f"id:{data_id};request-id:{request_id};ts:{ts};"
    v1 = hmac.new(MP_SECRET.encode(), manifest.encode(), hashlib.sha256).hexdigest()
    return {
        "path": f"{MERCADOPAGO}?{_query([('data.id', data_id), ('type', 'payment')])}",
        "headers": {
            "Content-Type": "application/json",
            "x-request-id": request_id,
            "x-signature": f"ts={ts},v1={v1}",
        },
        "body": body
        if body is not None
        else json.dumps(events.mercadopago_notification(data_id)).encode(),
    }


@FUZZ
@given(sent=mercadopago_requests())
@example(
    sent={  # found by this test: was a 500 (TypeError in the SDK's compare)
        "body": json.dumps(events.mercadopago_notification("1")).encode(),
        "query": [("data.id", "1")],
        "headers": {
            "Content-Type": "application/json",
            "x-request-id": "r",
            "x-signature": f"ts=1,v1={'0' * 63}\x80",
        },
    }
)
async def test_mutated_mercadopago_webhooks_store_nothing_unless_verified(web, sent) -> None:
    await web.start()
    answer = await web.send(
        "POST",
        _path(MERCADOPAGO, sent["query"]),
        data=sent["body"],
        headers=sent["headers"],
    )
    data_ids = [value for key, value in sent["query"] if key == "data.id"]
    verified = sent["headers"]["Content-Type"].split(";")[
        0
    ] == "application/json" and _mercadopago_verified(
        sent["headers"].get("x-signature"),
        sent["headers"].get("x-request-id"),
        data_ids[0] if data_ids else None,
    )
    await web.finish(answer, refused=not verified, what="an unverified Mercado Pago webhook")
    if not verified:
        assert answer.status in (400, 401, 415), answer.text[:300]
    elif "Content-Encoding" in sent["headers"]:
        pass  # the body the route reads is the decoded one: no claim beyond the properties
    elif _mercadopago_notification_well_formed(sent["body"], data_ids[0]):
        assert answer.status == 200, answer.text[:300]
    else:
        assert answer.status == 400, answer.text[:300]


@st.composite
def signed_mercadopago_garbage(draw: st.DrawFn) -> dict[str, Any]:
    """A valid signature over odd ids, request ids and timestamps, with bodies of any shape;
    never a timely signature over a well-formed notification (such a draw is discarded)."""
    data_id = draw(
        st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=16)
    )
    request_id = draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40))
    ts = draw(
        st.sampled_from(
            [str(int(time.time())), str(int(time.time() * 1000)), "²", "1" * 40, "0", "-1"]
        )
    )
    notification = events.mercadopago_notification(data_id)
    shape = draw(st.sampled_from(["notification", "value", "bytes", "deep"]))
    if shape == "bytes":
        body = draw(st.binary(max_size=200))
    elif shape == "deep":
        body = draw(deep_json)
    elif shape == "value":
        body = json.dumps(draw(json_values)).encode()
    else:
        for key in draw(
            st.lists(st.sampled_from(["id", "type", "action", "data", "user_id"]), max_size=3)
        ):
            notification[key] = draw(json_values)
        body = json.dumps(notification).encode()
    sent = _mercadopago_signed(data_id, request_id, ts, body)
    assume(
        not _mercadopago_verified(sent["headers"]["x-signature"], request_id, data_id)
        or not _mercadopago_notification_well_formed(body, data_id)
    )
    return sent


@FUZZ
@given(sent=signed_mercadopago_garbage())
@example(sent=_mercadopago_signed("0", "0", "²"))  # found by this test: was a 500 (int("²"))
async def test_signed_mercadopago_garbage_is_a_4xx_that_changes_nothing(web, sent) -> None:
    await web.start()
    answer = await web.send("POST", sent["path"], data=sent["body"], headers=sent["headers"])
    await web.finish(answer, refused=True, what="a refused signed Mercado Pago notification")


# Content codings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "br"])
@pytest.mark.parametrize("path", [STRIPE, MERCADOPAGO])
async def test_a_body_that_does_not_decode_is_a_4xx_that_changes_nothing(web, path, coding) -> None:
    await web.start()
    answer = await web.send(
        "POST",
        path,
        data=_event_body(),
        headers={"Content-Type": "application/json", "Content-Encoding": coding},
    )
    await web.finish(answer, refused=True, what=f"a body that is not {coding}")


# Raw bytes ----------------------------------------------------------------------------------------

header_bytes = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@FUZZ
@given(
    path=st.sampled_from([STRIPE, MERCADOPAGO]),
    name=st.sampled_from(
        [b"Stripe-Signature", b"x-signature", b"x-request-id", b"Content-Type", b"X-Request-Id"]
    ),
    value=header_bytes,
    query=st.binary(max_size=40).map(lambda b: bytes(c for c in b if c not in b" \r\n#")),
    body=st.binary(max_size=100),
)
async def test_raw_header_and_query_bytes_never_break_the_webhooks(
    web, path, name, value, query, body
) -> None:
    await web.start()
    target = path.encode() + (b"?" + query if query else b"")
    head = (
        b"POST " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\n" + name + b": " + value + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    )
    answer = await web.send_raw(head, body)
    await web.finish(answer, refused=True, what="a webhook with raw header bytes")
