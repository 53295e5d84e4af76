"""Every route the app serves (walked from its router, so a new route is fuzzed the day it is
added), and paths it does not serve, with random methods, path segments, query strings, headers
and bodies and no credentials: never a 5xx, nothing stored, no secret in the answer or the logs,
and a route that needs credentials (a token, a signature, a download link) always refuses."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz_support import (
    FUZZ,
    capture_logs,
    configured_secrets,
    fuzz_settings,
    make_target,
)

_VARIABLE = re.compile(r"\{[^}]+\}")
# Routes nobody may use without a token, a provider's signature or the issued download link.
NEEDS_CREDENTIALS = (
    "/api/v1/bot/",
    "/api/v1/commands/",
    "/api/v1/keys",
    "/api/v1/admin/",
    "/webhooks/",
    "/downloads/",
)


@pytest.fixture
async def web(settings, make_client, db):
    active = fuzz_settings(settings)
    with capture_logs() as logs:
        target = await make_target(await make_client(active), db, configured_secrets(active), logs)
        routes = sorted(
            {
                (route.method, route.resource.canonical)
                for route in target.client.app.router.routes()
                if route.resource is not None and route.method != "HEAD"
            }
        )
        target.routes = routes + [("GET", "/nowhere/{x}"), ("PATCH", "/api/v1/rates/latest")]  # type: ignore[attr-defined]
        yield target


def _segment(text: str) -> str:
    return quote(text.encode("utf-8", "surrogateescape"), safe="") or "x"


@FUZZ
@given(
    data=st.data(),
    method=st.none()
    | st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH"]),
    segment=st.text(max_size=60),
    query=st.lists(st.tuples(st.text(max_size=10), st.text(max_size=30)), max_size=4),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "Content-Type",
                "Accept",
                "X-Request-Id",
                "Cookie",
                "Range",
                "Content-Encoding",
                "Transfer-Encoding",
                "Origin",
                "X-Forwarded-For",
                "If-None-Match",
            ]
        ),
        st.text(
            st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
            max_size=60,
        ),
        max_size=3,
    ),
    body=st.binary(max_size=300),
)
async def test_any_route_without_credentials_changes_nothing(
    web, data, method, segment, query, headers, body
) -> None:
    route_method, template = data.draw(st.sampled_from(web.routes), label="route")
    path = _VARIABLE.sub(lambda _: _segment(segment), template)
    query_string = "&".join(f"{_segment(k)}={_segment(v)}" for k, v in query)
    headers.pop("Transfer-Encoding", None)  # the client library sets framing itself
    await web.start()
    answer = await web.send(
        method or route_method,
        f"{path}?{query_string}" if query_string else path,
        data=body,
        headers=headers,
    )
    await web.finish(
        answer,
        refused=template.startswith(NEEDS_CREDENTIALS),
        changes_nothing=True,
        what="a request without credentials",
    )
