"""What every console page is built from: the CSP and headers, static files with integrity
hashes, HTML error pages, confirmations, redirects with a notice, and cursors."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import jinja2
import pytest
from aiohttp import web
from multidict import MultiDict

from colmena.http.console import operator
from colmena.http.console.core import (
    HtmlError,
    Page,
    confirmation,
    decode_cursor,
    encode_cursor,
    form,
    see_other,
)
from colmena.http.console.errors import CONSOLE_CSP
from colmena.http.console.static import STATIC_DIR
from colmena.http.errors import ApiError
from colmena.http.middlewares import SECURITY_HEADERS
from tests.console_support import console, console_settings, page_token, sign_in_admin_token
from tests.fuzz_support import capture_logs


async def boom(_request: web.Request) -> web.Response:
    raise RuntimeError("a bug with a secret-looking detail")


async def gone(_request: web.Request) -> web.Response:
    raise HtmlError(404, "There is no such page.")


async def busy(_request: web.Request) -> web.Response:
    raise ApiError(503, "busy", "the pool is exhausted")


async def act(request: web.Request) -> web.Response:
    data = await form(request)
    asked = confirmation(request, data, message="Please confirm", cancel_to="/console/admin/x")
    if asked is not None:
        return asked
    return see_other(request, "/console/login", notice="You are signed out.")


def add_test_pages(console_app: web.Application) -> None:
    console_app.router.add_get("/admin/boom", boom)
    console_app.router.add_get("/admin/gone", gone)
    console_app.router.add_get("/admin/busy", busy)
    console_app.router.add_post("/admin/act", act)


@pytest.fixture
def with_test_pages(monkeypatch):
    """The operator pages of this test: a few handlers that exercise the core."""
    original = operator.register

    def register(console_app: web.Application) -> None:
        original(console_app)
        add_test_pages(console_app)

    monkeypatch.setattr(operator, "register", register)


async def test_console_pages_get_the_console_csp_and_the_api_keeps_its_own(settings) -> None:
    async with console(console_settings(settings)) as client:
        page = await client.get("/console/login")
        assert page.headers["Content-Security-Policy"] == CONSOLE_CSP
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["Cache-Control"] == "no-store"
        assert "frame-ancestors 'none'" in CONSOLE_CSP and "'unsafe-inline'" not in CONSOLE_CSP
        api = await client.get("/healthz")
        assert api.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]


async def test_no_console_template_has_inline_script_style_or_handlers() -> None:
    root = STATIC_DIR.parent.parent / "templates" / "console"
    for path in root.rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path  # scripts only from files
        assert not re.search(r"\sstyle\s*=", text), path
        assert not re.search(r"<style", text), path
        assert not re.search(r"\son[a-z]+\s*=", text), path


async def test_static_files_carry_their_integrity_hash_and_a_long_cache(settings) -> None:
    async with console(console_settings(settings)) as client:
        page = await (await client.get("/console/login")).text()
        tags = re.findall(r'(?:href|src)="(/console/static/[^"]+)" integrity="([^"]+)"', page)
        assert {url.split("?")[0] for url, _ in tags} >= {
            "/console/static/console.css",
            "/console/static/console.js",
        }
        for url, integrity in tags:
            response = await client.get(url)
            assert response.status == 200
            body = await response.read()
            digest = base64.b64encode(hashlib.sha384(body).digest()).decode()
            assert integrity == f"sha384-{digest}"
            assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            name = url.split("?")[0].rsplit("/", 1)[1]
            assert body == (STATIC_DIR / name).read_bytes()
        missing = await client.get("/console/static/nothing.js")
        assert missing.status == 404 and missing.content_type == "text/html"


async def test_errors_inside_the_console_are_html_pages(settings, with_test_pages) -> None:
    async with console(console_settings(settings)) as client:
        unknown = await client.get("/console/nowhere")
        assert unknown.status == 404 and unknown.content_type == "text/html"
        assert "Esa página no existe." in await unknown.text()
        await sign_in_admin_token(client)
        gone_page = await client.get("/console/admin/gone")
        assert gone_page.status == 404 and "Esa página no existe." in await gone_page.text()
        busy_page = await client.get("/console/admin/busy")
        assert busy_page.status == 503 and "the pool is exhausted" not in await busy_page.text()
        wrong_method = await client.put(
            "/console/admin/act",
            headers={"X-CSRF-Token": await page_token(client, "/console/login")},
        )
        assert wrong_method.status == 405 and "POST" in wrong_method.headers["Allow"]
        with capture_logs() as logs:
            crash = await client.get("/console/admin/boom")
        assert crash.status == 500 and crash.content_type == "text/html"
        assert "secret-looking" not in await crash.text()
        lines = [json.loads(line) for line in logs.text().splitlines() if line.startswith("{")]
        assert any(line["event"] == "unhandled error in the console" for line in lines)


async def test_a_confirmation_reposts_the_same_fields_then_redirects_with_a_notice(
    settings, with_test_pages
) -> None:
    async with console(console_settings(settings)) as client:
        await sign_in_admin_token(client)
        token = await page_token(client, "/console/login")
        asked = await client.post(
            "/console/admin/act", data={"csrf_token": token, "queue": "payments", "n": "3"}
        )
        page = await asked.text()
        assert asked.status == 200 and "Confirma, por favor" in page
        confirm_form = page.split('action="/console/admin/act">')[1].split("</form>")[0]
        hidden = dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', confirm_form))
        assert hidden == {"csrf_token": token, "queue": "payments", "n": "3", "confirmed": "yes"}
        assert 'href="/console/admin/x"' in page
        done = await client.post("/console/admin/act", data=hidden, allow_redirects=False)
        assert done.status == 303 and done.headers["Location"] == "/console/login"
        shown = await (await client.get("/console/login")).text()
        assert '<div class="notice" role="status">Has salido de la consola.</div>' in shown
        again = await (await client.get("/console/login")).text()
        assert "Has salido de la consola." not in again  # shown once


def test_see_other_only_goes_to_console_paths() -> None:
    request = SimpleNamespace()
    with pytest.raises(ValueError):
        see_other(request, "https://evil.example/")  # type: ignore[arg-type]


def test_a_confirmed_form_asks_nothing() -> None:
    data = MultiDict({"confirmed": "yes"})
    assert confirmation(SimpleNamespace(), data, message="x") is None  # type: ignore[arg-type]


def test_cursors_round_trip_and_refuse_anything_else() -> None:
    when = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    ident = uuid.uuid4()
    cursor = encode_cursor(when, 42, "a b/c", Decimal("10.50"), ident, None)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)
    assert decode_cursor(cursor, 6) == (when, 42, "a b/c", Decimal("10.50"), ident, None)
    for bad in ("", "!!!", encode_cursor(1), base64.urlsafe_b64encode(b'[{"x":1},2]').decode()):
        with pytest.raises(HtmlError) as refused:
            decode_cursor(bad, 2)
        assert refused.value.status == 400


def test_the_pager_links_first_and_next_pages_keeping_other_parameters() -> None:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("colmena.http", "templates"), autoescape=True
    )
    template = env.from_string(
        '{% import "console/_macros.html" as m with context %}{{ m.pager(page) }}'
    )

    def render(query: dict[str, str], page: Page) -> str:
        request = SimpleNamespace(query=query)
        return template.render(
            page=page,
            request=request,
            _=lambda text: text,
            page_url=lambda cursor: "/x?q=a" + (f"&cursor={cursor}" if cursor else ""),
        )

    first = render({"q": "a"}, Page(items=[1], next_cursor="abc"))
    assert 'href="/x?q=a&amp;cursor=abc" rel="next"' in first and "First page" not in first
    middle = render({"q": "a", "cursor": "abc"}, Page(items=[1], next_cursor="def"))
    assert 'href="/x?q=a">First page' in middle and "cursor=def" in middle
    assert render({"q": "a"}, Page(items=[1])).strip() == ""
