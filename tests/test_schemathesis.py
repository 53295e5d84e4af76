"""Schemathesis against the real ingress: every operation of /api/v1/openapi.json, every check.

A `colmena ingress` process serves a database of this module's own, where a tenant (whose bot
has logged a few lines) and published rates are waiting; the tenant's token and the admin token
are given to Schemathesis for the document's two security schemes. Per operation it sends the
document's examples, the coverage cases of its constraints (each boundary, each documented way to
be wrong, missing auth, unexpected methods) and fuzzed cases, valid and invalid, and runs every
check Schemathesis has on every answer (its default; nothing here turns one off):
not_a_server_error, status_code_conformance, content_type_conformance,
response_schema_conformance, response_headers_conformance, negative_data_rejection,
positive_data_acceptance, missing_required_header, unsupported_method, allow_header_conformance
and ignored_auth. Any failure fails the operation's test and prints a curl line that replays it.

The run is bounded (MAX_EXAMPLES fuzzed cases per operation) and seeded (SEED), with Hypothesis's
example database off, so a CI failure reproduces locally with the same cases. Schemathesis makes
one test per operation, so they share one ingress (module scope) and this module makes its own
database and queue names, as tests/conftest.py does per test. The schema is read from the file
the ingress serves; the fixture waits until the ingress serves exactly those bytes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import aiohttp
import asyncpg
import pika
import pytest
import schemathesis
from schemathesis import Case

from bench.common import LoopThread
from colmena.actors import all_actors
from colmena.config import Settings
from colmena.domain.key_sealing import encode_key
from colmena.domain.tenants import DEFAULT_CONFIG, new_token, token_digest
from colmena.http.openapi import PATH, load_document
from colmena.runtime.queues import DOMAIN_QUEUES, queue_declarations
from colmena.sandbox.stripe_billing import WebhookTarget
from colmena.store import bot_logs
from colmena.store import rates as rates_store
from colmena.store import tenants as tenants_store
from colmena.store.pool import connect
from tests.bots_support import ADMIN_TOKEN, SEAL_PUBLIC_KEY
from tests.conftest import ADMIN_URL, AMQP_URL, wait_for
from tests.ops_support import colmena_env, free_port
from tests.standins.stripe_billing_api import StripeBillingStandin

SEED = 20260901
MAX_EXAMPLES = 30
TENANT_TOKEN = new_token()
DOCUMENT = load_document()
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        "auth": {
            "openapi": {
                "tenantToken": {"bearer": TENANT_TOKEN},
                "adminToken": {"bearer": ADMIN_TOKEN},
            }
        },
    }
)
SCHEMA = schemathesis.openapi.from_dict(json.loads(DOCUMENT), config=CONFIG)


def _date(value: object) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


@SCHEMA.hook
def filter_case(context: schemathesis.HookContext, case: Case) -> bool:
    """Drop cases that break a rule between two parameters, which JSON Schema cannot state and
    the document states in words (test_rates.py checks their 400): the history's `from` after
    its `to`, a conversion from a currency to itself, a report's range reversed or too long."""
    query = case.query or {}
    start, end = query.get("from"), query.get("to")
    if case.path == "/api/v1/rates/history":
        first, last = _date(start), _date(end)
        return not (first and last and first > last)
    if case.path == "/api/v1/rates/convert" and isinstance(start, str) and isinstance(end, str):
        return start.strip().upper() != end.strip().upper()
    if case.path.startswith(("/api/v1/admin/reports/", "/api/v1/admin/reconcile")):
        # A report's range: `to` not before `from`, at most COLMENA_REPORT_MAX_DAYS (test_reports*).
        first, last = _date(start), _date(end)
        return not (first and last and not 0 <= (last - first).days < 366)
    return True


async def _seed(database_url: str) -> None:
    """The tenant (its bot has logged three lines), published rates of both sources, and the
    Pro plan on sale.

    The tenant's plan allows every config the document allows (100 symbols, live trading): a
    plan's own limits are a documented 422 that no schema of the request can foresee.
    """
    conn = await connect(database_url)
    try:
        await conn.execute(
            "UPDATE plans SET max_symbols = 100, live_allowed = true, "
            "max_capital = 999999999999.99999999 WHERE name = 'enterprise'"
        )
        await conn.execute(
            "INSERT INTO products (ref, kind, name, plan) VALUES ('plan-pro', 'plan', 'Pro', 'pro')"
        )
        await conn.execute(
            "INSERT INTO prices (product_ref, currency, amount, billing_period) "
            "VALUES ('plan-pro', 'USD', 29, 'month')"
        )
        tenant_id = f"t-{uuid.uuid4().hex[:10]}"
        await tenants_store.create_tenant(
            conn,
            tenant_id=tenant_id,
            email=f"{tenant_id}@example.com",
            plan="enterprise",
            token_sha256=token_digest(TENANT_TOKEN),
            config=dict(DEFAULT_CONFIG),
        )
        now = datetime.now(UTC)
        await bot_logs.append(conn, tenant_id, 1, [(now, f"line {n}") for n in range(1, 4)])
        for source, pair, value in (
            ("bcv", "USD/VES", "36.5123"),
            ("bcv", "EUR/VES", "39.80"),
            ("binance", "USDT/VES", "38.1"),
        ):
            await rates_store.insert(
                conn,
                source=source,
                pair=pair,
                value=Decimal(value),
                effective_date=date(2026, 9, 1),
                status="accepted",
                reason="seed",
            )
    finally:
        await conn.close()


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _delete_queues(prefix: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    for queue in set(DOMAIN_QUEUES) | {spec.queue for spec in all_actors()}:
        for name, _ in queue_declarations(prefix + queue, quorum=False):
            channel.queue_delete(queue=name)
    connection.close()


async def _serves_the_document(url: str, process: subprocess.Popen[bytes], log: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"colmena ingress exited:\n{log.read_text(errors='replace')}")
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status == 200 and await response.read() == DOCUMENT
    except aiohttp.ClientError:
        return False


@pytest.fixture(scope="module")
def ingress(template_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a `colmena ingress` process on a seeded database of this module's own."""
    workdir: Path = tmp_path_factory.mktemp("schemathesis")
    database = f"colmena_t_{uuid.uuid4().hex[:12]}"
    settings = Settings(
        database_url=f"{ADMIN_URL.rpartition('/')[0]}/{database}",
        broker_url=AMQP_URL,
        queue_prefix=f"t{uuid.uuid4().hex[:10]}_",
        data_dir=workdir / "data",
        _env_file=None,
    )
    asyncio.run(_admin(f'CREATE DATABASE "{database}" TEMPLATE "{template_database}"'))
    port = free_port()
    log = workdir / "ingress.log"
    process = None
    # Stripe's API (billing checkout and portal), served while Schemathesis blocks this thread.
    stripe_loop = LoopThread("stripe-standin")
    stripe = StripeBillingStandin(WebhookTarget("", "whsec_schemathesis"))
    stripe_url = stripe_loop.run(stripe.start())
    try:
        asyncio.run(_seed(settings.require_database_url()))
        env = colmena_env(
            settings,
            COLMENA_HTTP_PORT=str(port),
            COLMENA_BOT_ADMIN_TOKEN=ADMIN_TOKEN,
            COLMENA_KEY_SEAL_PUBLIC_KEY=encode_key(SEAL_PUBLIC_KEY),
            # Throttling (a documented 429) would answer most cases before any rule is reached.
            COLMENA_RATE_LIMIT_PRESET="off",
            # No worker finishes the commands the cases queue; the tenant's bound stays out of
            # reach, as throttling does.
            COLMENA_TENANT_MAX_COMMANDS_IN_FLIGHT="100",
            # Once a case has started the bot, a log stream stays open until this runs out.
            COLMENA_BOT_SSE_MAX_SECONDS="0.2",
            COLMENA_STRIPE_SECRET_KEY="sk_test_schemathesis",
            COLMENA_STRIPE_API_URL=stripe_url,
        )
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "colmena", "ingress"],
                env=env,
                cwd=workdir,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        base_url = f"http://127.0.0.1:{port}"
        asyncio.run(
            wait_for(lambda: _serves_the_document(base_url + PATH, process, log), timeout=60)
        )
        yield base_url
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        _delete_queues(settings.queue_prefix)
        stripe_loop.run(stripe.stop())
        stripe_loop.close()


@SCHEMA.parametrize()
def test_every_operation_passes_every_check(case: Case, ingress: str) -> None:
    case.call_and_validate(base_url=ingress)
