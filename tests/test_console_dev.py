"""The console in `colmena dev` out of the box: an empty directory, no configuration.

One real `colmena dev`; a payment and a tenant made from a second terminal, as an operator
would. Signed in with the admin token dev made into its data directory, every operator page the
console links to answers; signed in with the tenant's token, so does every tenant page.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp

from tests.conftest import wait_for
from tests.test_dev import free_port, ready, start_dev, stop
from tests.test_dev_sandboxes import operator

STREAMS = re.compile(r"/logs/stream$")  # server-sent events: open until the browser leaves
MAX_PAGES = 80


class _Page(HTMLParser):
    """The links and the sign-in form's CSRF token of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.csrf_token: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a" and found.get("href"):
            self.links.append(str(found["href"]))
        if tag == "input" and found.get("name") == "csrf_token":
            self.csrf_token = found.get("value")


def _parsed(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


async def _sign_in(session: aiohttp.ClientSession, base: str, **fields: str) -> str:
    async with session.get(f"{base}/console/login") as response:
        assert response.status == 200
        token = _parsed(await response.text()).csrf_token
    assert token, "the sign-in page carries a CSRF token"
    async with session.post(
        f"{base}/console/login", data={"csrf_token": token, "next": "", **fields}
    ) as response:
        assert response.status == 200, await response.text()
        return urlsplit(str(response.url)).path


async def _walk(session: aiohttp.ClientSession, base: str, home: str) -> dict[str, int]:
    """Every page under `home` the console links to, from `home` on: path -> status."""
    seen: dict[str, int] = {}
    waiting = [home]
    while waiting and len(seen) < MAX_PAGES:
        path = waiting.pop(0)
        if path in seen:
            continue
        async with session.get(base + path, allow_redirects=False) as response:
            seen[path] = response.status
            if response.content_type != "text/html":
                continue
            text = await response.text()
        for link in _parsed(text).links:
            target = urlsplit(urljoin(base + path, link))
            if target.netloc != urlsplit(base).netloc or not target.path.startswith(home):
                continue
            if STREAMS.search(target.path):
                continue
            wanted = target.path + (f"?{target.query}" if target.query else "")
            if wanted not in seen and wanted not in waiting:
                waiting.append(wanted)
    return seen


async def test_every_console_page_answers_in_dev_out_of_the_box(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_dev(tmp_path, port)
    try:
        await wait_for(lambda: ready(port), timeout=60, interval=0.25)
        triggered = await operator(tmp_path, "trigger", "stripe", "payment_intent.succeeded")
        assert triggered.returncode == 0, triggered.stdout + triggered.stderr

        async def settled() -> bool:
            listed = await operator(tmp_path, "payments", "list", "--json")
            return listed.returncode == 0 and json.loads(listed.stdout) != []

        await wait_for(settled, timeout=60, interval=0.5)
        created = await operator(tmp_path, "tenants", "create", "--email", "ana@example.com")
        assert created.returncode == 0, created.stdout + created.stderr
        tenant_token = created.stdout.rsplit(": ", 1)[1].strip()
        admin_token = (tmp_path / ".colmena" / "dev-admin-token").read_text().strip()

        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            assert await _sign_in(session, base, kind="admin", admin_token=admin_token) == (
                "/console/admin/"
            )
            admin_pages = await _walk(session, base, "/console/admin/")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            assert await _sign_in(session, base, kind="tenant", token=tenant_token) == (
                "/console/tenant/"
            )
            tenant_pages = await _walk(session, base, "/console/tenant/")
    finally:
        output = await stop(process)
    assert process.returncode == 0, output
    assert f"{base}/console/" in output, "the banner names the console"
    assert admin_token not in output, "the banner names the token's file, never the token"

    for section in ("payments", "dead-letters", "licenses", "invoices", "rates", "tenants"):
        assert f"/console/admin/{section}" in admin_pages, sorted(admin_pages)
    assert any(re.fullmatch(r"/console/admin/payments/\d+", path) for path in admin_pages)
    for section in ("config", "logs", "keys", "notifications"):
        assert f"/console/tenant/{section}" in tenant_pages, sorted(tenant_pages)
    failing = {
        path: status for path, status in {**admin_pages, **tenant_pages}.items() if status != 200
    }
    assert failing == {}
