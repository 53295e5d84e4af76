"""`colmena dev`: the whole platform in one process, on a machine with nothing but Python.

Embedded PostgreSQL (pgserver, data under COLMENA_DATA_DIR) unless COLMENA_DATABASE_URL is set;
the in-process StubBroker and worker unless COLMENA_BROKER_URL is set; migrations applied; the
ingress and the scheduler in this process. With the StubBroker the queues die with the process,
so actors stamp their outbox rows as consumed and a restart republishes everything else. Every
provider colmena is not configured for gets a labelled sandbox (colmena.sandbox) under /sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import secrets
import signal
import warnings
from pathlib import Path

import dramatiq
import structlog
from aiohttp import web
from dramatiq.brokers.stub import StubBroker
from pydantic import SecretStr

from colmena.actors import all_actors, all_jobs
from colmena.config import Settings
from colmena.config.dev_files import create_once
from colmena.config.dev_stack import (
    SAMPLE_PRODUCT,
    new_dev_stack,
    remove_dev_stack,
    write_dev_stack,
)
from colmena.config.logging import configure_logging
from colmena.config.payments_settings import DEV_MERCADOPAGO_SECRET, DEV_STRIPE_SECRET
from colmena.gateways import bitso_webhooks
from colmena.http.app import create_app
from colmena.http.dev_control import control_app
from colmena.http.health import add_metrics_route
from colmena.runtime import scheduler
from colmena.runtime.broker import create_broker, declare_actors
from colmena.runtime.outbox import relay_until_empty
from colmena.runtime.ports import port_in_use
from colmena.runtime.publisher import AmqpPublisher, BrokerPublisher, Publisher
from colmena.runtime.queue_admin import InProcessQueueAdmin
from colmena.runtime.resources import Resources
from colmena.runtime.startup import migrate
from colmena.sandbox.catalog import seed_sample_catalog
from colmena.sandbox.serving import DESCRIPTIONS, dev_sandboxes, mount_sandboxes, with_sandboxes
from colmena.sandbox.stamping import PAC_SANDBOX_BANNER
from colmena.store.outbox import requeue_unconsumed
from colmena.supervisor.keys import dev_seal_key_pair

log = structlog.get_logger(__name__)


def embedded_database_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under data_dir; it stops when we exit."""
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir.resolve() / "pgdata", cleanup_mode="stop")
    return server.get_uri()


def _sandbox_lines(sandboxes: dict[str, str]) -> list[str]:
    if not sandboxes:
        return []
    lines = ["  sandboxes (sample data served by this process, marked as sandbox wherever shown):"]
    for provider, url in sandboxes.items():
        lines.append(f"    {provider:<12} {url}  ({DESCRIPTIONS[provider][0]})")
    return lines


def next_commands(sandboxes: dict[str, str]) -> list[str]:
    """What to type next in a second terminal; each works with no configuration (the test suite
    runs every one of them against a fresh `colmena dev`)."""
    commands = [
        "colmena trigger stripe payment_intent.succeeded --rfc XAXX010101000",
        "colmena payments list",
        "colmena license list",
        "colmena invoices list",
    ]
    if "mercadopago" in sandboxes:
        commands.append("colmena trigger mercadopago approved")
    commands += [f"colmena rates scrape {s}" for s in ("bcv", "binance") if s in sandboxes]
    commands += [
        "colmena rates list",
        "colmena tenants create --email you@example.com",
        "colmena status",
        "colmena dlq list",
        "colmena check",
    ]
    return commands


def _banner(
    settings: Settings, database: str, broker: str, sandboxes: dict[str, str], cfdi: str
) -> str:
    base = f"http://{settings.http_host}:{settings.http_port}"
    return "\n".join(
        [
            "",
            "  colmena dev is running",
            f"    ingress    {base}",
            f"    ready      {base}/readyz",
            f"    metrics    {base}/metrics",
            f"    console    {base}/console/  ({_console_sign_in(settings)})",
            f"    database   {database}",
            f"    broker     {broker}",
            f"    CFDI       {cfdi}",
            "",
            "  try next, in a second terminal in this directory (no configuration needed):",
            *(f"    {command}" for command in next_commands(sandboxes)),
            "",
            *_sandbox_lines(sandboxes),
            "  Ctrl-C stops it; the data stays in " + str(settings.data_dir),
            "",
        ]
    )


def with_dev_secrets(settings: Settings) -> Settings:
    """Known webhook secrets for a laptop (Bitso's: a key pair made once under
    COLMENA_DATA_DIR), so `colmena trigger` works with no configuration."""
    update: dict[str, object] = {}
    if settings.stripe_webhook_secrets is None:
        update["stripe_webhook_secrets"] = SecretStr(DEV_STRIPE_SECRET)
    if settings.mercadopago_webhook_secret is None:
        update["mercadopago_webhook_secret"] = SecretStr(DEV_MERCADOPAGO_SECRET)
    if not settings.bitso_webhook_public_keys:
        dev_key = bitso_webhooks.public_key_text(bitso_webhooks.dev_signing_key(settings.data_dir))
        update["bitso_webhook_public_keys"] = {bitso_webhooks.DEV_KEY_ID: dev_key}
    return settings.model_copy(update=update)


DEV_ADMIN_TOKEN_FILE = "dev-admin-token"


def with_dev_admin_token(settings: Settings) -> Settings:
    """An admin token made once under COLMENA_DATA_DIR unless COLMENA_BOT_ADMIN_TOKEN is set:
    the console's operator sign-in (and /api/v1/admin) work with no configuration."""
    if settings.bot_admin_token is not None:
        return settings
    token, _ = create_once(
        settings.data_dir / DEV_ADMIN_TOKEN_FILE, lambda: secrets.token_urlsafe(32)
    )
    return settings.model_copy(update={"bot_admin_token": SecretStr(token.strip())})


def _console_sign_in(settings: Settings) -> str:
    """How an operator signs in, for the banner: the token's file, never the token."""
    path = settings.data_dir / DEV_ADMIN_TOKEN_FILE
    token = settings.bot_admin_token
    if (
        token is not None
        and path.is_file()
        and path.read_text().strip() == token.get_secret_value()
    ):
        return f"operators: the admin token in {path}, until `colmena admins add NAME`"
    return "operators: COLMENA_BOT_ADMIN_TOKEN, until `colmena admins add NAME`"


def with_quick_relay(settings: Settings) -> Settings:
    """Rows an operator command records (a second terminal cannot reach the in-process broker)
    reach the broker within a second or two, unless COLMENA_RELAY_GRACE_S is set."""
    if "relay_grace_s" in settings.model_fields_set:
        return settings
    return settings.model_copy(update={"relay_grace_s": DEV_RELAY_GRACE_S})


def with_dev_key_pair(settings: Settings) -> Settings:
    """The pair that seals provider keys from the ingress to the bots actors, made once under
    COLMENA_DATA_DIR, unless either half is configured."""
    if settings.key_seal_public_key is not None or settings.key_seal_private_key is not None:
        return settings
    private_key, public_key = dev_seal_key_pair(settings.data_dir)
    return settings.model_copy(
        update={"key_seal_private_key": SecretStr(private_key), "key_seal_public_key": public_key}
    )


DEV_RELAY_GRACE_S = 0.5


def seed_sample_product(settings: Settings) -> None:
    """The product `colmena trigger stripe` buys, so a first license can be delivered at once."""
    products = settings.license_products_path
    if products.exists():
        return
    sample = products / SAMPLE_PRODUCT
    sample.mkdir(parents=True)
    (sample / "README.txt").write_text(
        "Sample product created by `colmena dev`.\n"
        f"Put each product's files in {products}/<product_ref>/ (COLMENA_LICENSE_PRODUCTS_DIR).\n"
    )
    log.info("sample product created", directory=str(sample))


def _embedded_database(settings: Settings) -> str:
    """Start the embedded PostgreSQL; pgserver stops it at interpreter exit, on every path that
    exits (an error, Ctrl-C during start-up, SIGTERM)."""
    with warnings.catch_warnings():
        # platformdirs' note that XDG_RUNTIME_DIR is unset says nothing a dev user can act on.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        return embedded_database_url(settings.data_dir)


async def _serve(app: web.Application, settings: Settings) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.http_host, settings.http_port).start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise port_in_use(settings.http_host, settings.http_port, "COLMENA_HTTP_PORT") from None
        raise
    return runner


async def run_dev(settings: Settings) -> None:
    """Run everything until SIGTERM or Ctrl-C; whatever was started is stopped on the way out."""
    configure_logging(dev=True, level=settings.log_level)
    settings = with_dev_key_pair(with_dev_secrets(with_quick_relay(settings)))
    settings = with_dev_admin_token(settings)
    sandboxes = dev_sandboxes(settings)
    settings = with_sandboxes(settings, sandboxes)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    seed_sample_product(settings)
    if settings.database_url is not None:
        database_url = settings.database_url.get_secret_value()
        database_label = "COLMENA_DATABASE_URL"
    else:
        database_url = await asyncio.to_thread(_embedded_database, settings)
        database_label = f"embedded PostgreSQL in {settings.data_dir / 'pgdata'}"
    applied = await migrate(database_url)
    if applied:
        log.info("migrations applied", migrations=applied)

    broker_url = settings.broker_url.get_secret_value() if settings.broker_url is not None else None
    in_process = broker_url is None

    def publisher(broker: dramatiq.Broker) -> Publisher:
        if broker_url is None:
            return BrokerPublisher(broker, settings.queue_prefix)
        return AmqpPublisher(broker_url, settings.queue_prefix, quorum=settings.quorum_queues)

    async with contextlib.AsyncExitStack() as running:
        broker = create_broker(settings, broker_url=broker_url, quorum=settings.quorum_queues)
        running.callback(broker.close)
        worker_resources = Resources(
            settings,
            database_url=database_url,
            publisher=publisher(broker),
            track_consumption=in_process,
        )
        declare_actors(broker, settings, worker_resources, all_actors())
        resources = Resources(settings, database_url=database_url, publisher=publisher(broker))
        await resources.start()
        async with resources.pool.acquire() as conn:
            if seeded := await seed_sample_catalog(conn):
                log.info("sample catalog seeded", prices=seeded)
        if in_process:
            async with resources.pool.acquire() as conn:
                requeued = await requeue_unconsumed(conn)
            sent = await relay_until_empty(resources.pool, resources.publisher, grace_s=0)
            if requeued or sent:
                log.info("republished messages left from the last run", count=sent)

        broker.emit_after("process_boot")
        worker = dramatiq.Worker(broker, worker_threads=settings.worker_threads)
        worker.start()
        running.push_async_callback(asyncio.to_thread, worker.stop)

        stack = new_dev_stack(
            database_url=database_url,
            broker_url=broker_url,
            ingress_url=f"http://{settings.http_host}:{settings.http_port}",
            sandboxes=sandboxes,
        )
        app = create_app(settings, resources)
        add_metrics_route(app, ingress=app)  # dev serves everything on its one port
        mount_sandboxes(app, sandboxes)
        if isinstance(broker, StubBroker):
            queues = InProcessQueueAdmin(
                broker, settings.queue_prefix, consumers=settings.worker_threads
            )
            app.add_subapp("/dev", control_app(queues, stack.control_token))
        runner = await _serve(app, settings)
        running.push_async_callback(runner.cleanup)
        write_dev_stack(settings.data_dir, stack)
        running.callback(remove_dev_stack, settings.data_dir, stack)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        broker_label = "RabbitMQ (COLMENA_BROKER_URL)" if broker_url else "in-process"
        cfdi = (
            PAC_SANDBOX_BANNER
            if "pac" in sandboxes
            else "as configured (COLMENA_PAC_*, COLMENA_CFDI_*)"
        )
        print(_banner(settings, database_label, broker_label, sandboxes, cfdi), flush=True)
        await scheduler.run_forever(resources, all_jobs(), stop)
