"""The console's operator pages with 100,000 payments: request time of each page, server-rendered.

Two scratch databases, loaded the same way (bench/console_seed.py): a small one (100 payments)
and a large one (100,000 payments with 300,000 provider events, 80,000 licenses and their
emails, 60,000 invoices). The real ingress serves each on a loopback port; a signed-in admin
(logged in through the console's own login form) asks for each page `--samples` times, the
two servers in turn, so that a busy machine weighs on both alike. The figure is the median
request time over loopback (the server's render plus a fraction of a millisecond of HTTP);
its baseline is the same page on the small database, so the ratio says how much the page
slows down with a history a thousand times longer (1.0: not at all). The
deep cursor page (the 500th page of the list, reached by following the "next" links) has the
list's first page on the large database as its baseline: keyset pagination makes them equal,
an OFFSET would not.

    python bench/console.py [--payments 100000] [--samples 30] [--deep 500]

Both databases are dropped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from selectolax.lexbor import LexborHTMLParser as HTMLParser

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.common import (  # noqa: E402
    AMQP_URL,
    exit_on_sigterm,
    figure,
    machine,
    median,
    percentile,
    scratch_database,
)
from bench.console_seed import seed  # noqa: E402
from colmena.config import Settings  # noqa: E402
from colmena.config.logging import configure_logging  # noqa: E402
from colmena.domain.accounts import HashCost, hasher  # noqa: E402
from colmena.http.app import create_app  # noqa: E402
from colmena.runtime.publisher import AmqpPublisher  # noqa: E402
from colmena.runtime.resources import Resources  # noqa: E402
from colmena.store.admins import create_admin  # noqa: E402
from colmena.store.pool import connect  # noqa: E402

ADMIN, PASSWORD = "bench-admin", "bench-" + uuid.uuid4().hex
SMALL = 100
# Seeded rows are numbered 1..N in both databases (bench/console_seed.py), so the same payment,
# provider id and email exist in each: the pages below ask for the same thing on both.
PROBE = 42
PAGES: dict[str, str] = {
    "overview": "/console/admin/",
    "payments list, first page": "/console/admin/payments",
    "search by email": f"/console/admin/payments?q=customer{PROBE}%40example.com",
    "search by provider id": f"/console/admin/payments?q=pi_bench{PROBE:08d}",
    "payment timeline": f"/console/admin/payments/{PROBE}",
    "licenses list, first page": "/console/admin/licenses",
    "license search by email": f"/console/admin/licenses?q=customer{PROBE}%40example.com",
    "invoices list, first page": "/console/admin/invoices",
    "invoices list, failed only": "/console/admin/invoices?status=failed",
}


def settings_for(url: str) -> Settings:
    return Settings(
        database_url=url,
        broker_url=AMQP_URL,
        queue_prefix=f"bench{uuid.uuid4().hex[:8]}_",
        env="dev",
        log_level="WARNING",
        rate_limit_preset="off",
        _env_file=None,
    )


class Console:
    """One ingress on a loopback port and an admin's browser-like client signed in to it."""

    def __init__(self, runner: web.AppRunner, base: str, client: aiohttp.ClientSession) -> None:
        self.runner, self.base, self.client = runner, base, client

    @classmethod
    async def start(cls, url: str) -> Console:
        settings = settings_for(url)
        conn = await connect(url)
        cost = HashCost(
            settings.accounts_argon2_time_cost,
            settings.accounts_argon2_memory_kib,
            settings.accounts_argon2_parallelism,
        )
        await create_admin(conn, name=ADMIN, password_hash=hasher(cost).hash(PASSWORD))
        await conn.close()
        resources = Resources(
            settings,
            database_url=url,
            publisher=AmqpPublisher(settings.require_broker_url(), settings.queue_prefix),
        )
        runner = web.AppRunner(create_app(settings, resources), handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        # unsafe=True: keep cookies for an IP address host (127.0.0.1), as a browser does.
        client = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        console = cls(runner, f"http://{host}:{port}", client)
        await console.login()
        return console

    async def login(self) -> None:
        """Sign in through the login page's admin form, CSRF token and all."""
        async with self.client.get(self.base + "/console/login") as response:
            page = HTMLParser(await response.text())
        form = next(f for f in page.css("form") if f.css_first("[name='username']") is not None)
        fields = {
            node.attributes["name"] or "": node.attributes.get("value") or ""
            for node in form.css("input[type='hidden']")
        }
        fields.update(username=ADMIN, password=PASSWORD)
        action = form.attributes.get("action") or "/console/login"
        async with self.client.post(self.base + action, data=fields) as response:
            if "/console/login" in str(response.url):
                raise RuntimeError(f"bench admin could not sign in: {response.status}")

    async def get(self, path: str) -> str:
        async with self.client.get(self.base + path, allow_redirects=False) as response:
            body = await response.text()
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
            return body

    async def deep_path(self, pages: int) -> str:
        """The list's page number `pages`, found by following each page's "next" link."""
        path = PAGES["payments list, first page"]
        for _ in range(pages - 1):
            link = HTMLParser(await self.get(path)).css_first("a[rel='next']")
            if link is None:
                raise RuntimeError(f"the payments list ended before page {pages}")
            path = link.attributes["href"] or ""
        return path

    async def close(self) -> None:
        await self.client.close()
        await self.runner.cleanup()


async def interleaved(
    calls: list[Callable[[], Awaitable[object]]], samples: int
) -> list[list[float]]:
    """Milliseconds of each call, `samples` rounds of one call each in turn (after two
    unmeasured warm-up rounds): whatever else the machine does weighs on all of them alike."""
    for _ in range(2):
        for call in calls:
            await call()
    spent: list[list[float]] = [[] for _ in calls]
    for _ in range(samples):
        for call, times in zip(calls, spent, strict=True):
            started = time.perf_counter()
            await call()
            times.append((time.perf_counter() - started) * 1000)
    return spent


async def loaded(url: str, payments: int) -> Console:
    conn = await connect(url)
    counts = await seed(conn, payments)
    await conn.close()
    print(f"seeded: {', '.join(f'{table} {count}' for table, count in counts.items())}")
    return await Console.start(url)


async def run(payments: int, samples: int, deep: int) -> None:
    print(f"machine: {machine()}")
    async with scratch_database() as small_url, scratch_database() as large_url:
        small = await loaded(small_url, SMALL)
        large = await loaded(large_url, payments)
        try:
            for name, path in PAGES.items():
                at_large, at_small = await interleaved(
                    [lambda path=path: large.get(path), lambda path=path: small.get(path)],
                    samples,
                )
                figure(
                    f"{name} ({payments} payments), median",
                    median(at_large),
                    "ms",
                    baseline=median(at_small),
                    baseline_name=f"{SMALL} payments",
                )
                print(f"{name}: p95 {percentile(at_large, 95):.1f} ms at {payments} payments")
            deep_path = await large.deep_path(deep)
            first = PAGES["payments list, first page"]
            at_deep, at_first = await interleaved(
                [lambda: large.get(deep_path), lambda: large.get(first)], samples
            )
            figure(
                f"payments list, page {deep} ({payments} payments), median",
                median(at_deep),
                "ms",
                baseline=median(at_first),
                baseline_name="first page",
            )
        finally:
            await small.close()
            await large.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--payments", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--deep", type=int, default=500, help="the deep page's number")
    args = parser.parse_args()
    exit_on_sigterm()
    configure_logging(dev=True, level="WARNING")  # the figures are the output
    asyncio.run(run(args.payments, args.samples, args.deep))


if __name__ == "__main__":
    main()
