"""Screenshots of the console's main pages, for the README: `python -m tests.console_screenshots`.

It builds what the browser tests build: a scratch database with the seeded dataset of
tests/console_data.py (and a dead letter in RabbitMQ under a queue prefix of its own), the real
ingress on a loopback port, Debian's chromium through Playwright; it signs in as an admin and
as a tenant and saves one PNG per page into docs/console/ (or `--out`). Everything it created
is removed at the end. It lives in tests/ because it is made of the tests' own pieces.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pika
from aiohttp.test_utils import TestServer
from playwright.async_api import Page, async_playwright

from colmena.actors import all_actors
from colmena.config import Settings
from colmena.http.app import create_app
from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.queues import DOMAIN_QUEUES, queue_declarations
from colmena.runtime.resources import Resources
from colmena.store.migrate import apply_migrations
from colmena.store.pool import connect
from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, add_admin, login_admin, login_tenant
from tests.conftest import ADMIN_URL, AMQP_URL
from tests.console_data import ConsoleData, seed_console

OUT = Path(__file__).parent.parent / "docs" / "console"
VIEWPORT = {"width": 1280, "height": 860}


@dataclass(frozen=True)
class Shot:
    file: str
    audience: str  # "admin", "tenant" or "anonymous"
    path: Callable[[ConsoleData], str]


SHOTS = [
    Shot("login.png", "anonymous", lambda d: "/console/login"),
    Shot("overview.png", "admin", lambda d: "/console/admin/"),
    Shot("payments.png", "admin", lambda d: "/console/admin/payments"),
    Shot("payment-timeline.png", "admin", lambda d: f"/console/admin/payments/{d.payment_ids[0]}"),
    Shot("dead-letters.png", "admin", lambda d: "/console/admin/dead-letters"),
    Shot("tenant-bot.png", "tenant", lambda d: "/console/tenant/"),
    Shot("tenant-logs.png", "tenant", lambda d: "/console/tenant/logs"),
]


def _drop_queues(prefix: str) -> None:
    queues = set(DOMAIN_QUEUES) | {spec.queue for spec in all_actors()}
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        for queue in queues:
            for name, _ in queue_declarations(prefix + queue, quorum=False):
                channel.queue_delete(queue=name)
    finally:
        connection.close()


async def _shoot(page: Page, base_url: str, path: str, target: Path) -> None:
    response = await page.goto(base_url + path)
    if response is None or response.status != 200:
        raise RuntimeError(f"{path}: HTTP {response.status if response else 'no response'}")
    await page.screenshot(path=str(target), full_page=True)


async def take_screenshots(out: Path, locale: str = "en-US") -> list[Path]:
    """Save every SHOTS page into `out`, in the browser language `locale`; the files written."""
    if not CHROMIUM.is_file():
        raise SystemExit(f"{CHROMIUM} is missing (apt-get install chromium)")
    out.mkdir(parents=True, exist_ok=True)
    database = f"colmena_shots_{uuid.uuid4().hex[:10]}"
    database_url = f"{ADMIN_URL.rpartition('/')[0]}/{database}"
    prefix = f"shots{uuid.uuid4().hex[:8]}_"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{database}"')
    written: list[Path] = []
    try:
        with tempfile.TemporaryDirectory() as scratch:
            settings = Settings(
                database_url=database_url,
                broker_url=AMQP_URL,
                queue_prefix=prefix,
                data_dir=Path(scratch),
                env="dev",
                log_level="WARNING",
                rate_limit_preset="off",
                _env_file=None,
            )
            conn = await connect(database_url)
            try:
                await apply_migrations(conn)
                data = await seed_console(conn, settings, payments=24)
                name, password = await add_admin(conn, settings, name="ana")
            finally:
                await conn.close()
            resources = Resources(
                settings,
                database_url=database_url,
                publisher=AmqpPublisher(AMQP_URL, prefix, connect_timeout=2),
            )
            server = TestServer(create_app(settings, resources), host="127.0.0.1")
            await server.start_server()
            base_url = str(server.make_url("")).rstrip("/")
            try:
                async with async_playwright() as playwright:
                    browser = await playwright.chromium.launch(
                        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
                    )
                    for audience in ("anonymous", "admin", "tenant"):
                        context = await browser.new_context(locale=locale, viewport=VIEWPORT)
                        page = await context.new_page()
                        if audience == "admin":
                            await login_admin(page, base_url, name, password)
                        elif audience == "tenant":
                            await login_tenant(page, base_url, data.tenants[1].token)
                        for shot in (s for s in SHOTS if s.audience == audience):
                            await _shoot(page, base_url, shot.path(data), out / shot.file)
                            written.append(out / shot.file)
                        await context.close()
                    await browser.close()
            finally:
                await server.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
        await asyncio.to_thread(_drop_queues, prefix)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder (default: {OUT})")
    parser.add_argument("--locale", default="en-US", help="browser language (es-VE: Spanish)")
    args = parser.parse_args()
    for path in asyncio.run(take_screenshots(args.out, args.locale)):
        print(path)


if __name__ == "__main__":
    main()
